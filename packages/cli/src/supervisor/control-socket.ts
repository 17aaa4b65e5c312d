// The supervisor's second door: a unix socket in the data directory, so
// `simdc fault restart nats` works while NATS is down, and only the operator
// (whoever may open files in the data directory; the socket is 0600) gets
// in. It speaks the same protobuf messages as the NATS endpoint, one JSON
// line per request and reply: {"method","request"} and {"response"} or
// {"error":{"code","message"}}, with the messages in base64.

import { chmodSync, existsSync, rmSync } from "node:fs";
import { createConnection, createServer, type Server } from "node:net";
import { join } from "node:path";
import { decodeMessage, encodeMessage, type Endpoint, type RpcMethod } from "@simdc/bus";
import { invalidArgument, isErrorCodeName, SimdcError, toSimdcError, unavailable, wallClock } from "@simdc/common";

/** Requests larger than this are refused: they are a few bytes each. */
const requestBytesMax = 64 * 1024;

export function controlSocketPath(dataDir: string): string {
  return join(dataDir, "supervisor.sock");
}

/** Serves `endpoints` on the socket at `path` (replacing a stale one). */
export async function serveControlSocket(path: string, endpoints: Endpoint<any, any>[]): Promise<Server> {
  const byMethod = new Map(endpoints.map((ep) => [ep.method.method, ep]));
  if (existsSync(path)) rmSync(path);
  const server = createServer((socket) => {
    let buffered = "";
    socket.on("error", () => socket.destroy());
    socket.on("data", (chunk: Buffer) => {
      buffered += chunk.toString("utf8");
      if (buffered.length > requestBytesMax) return void socket.destroy();
      let newline: number;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        void answer(line, byMethod).then((reply) => socket.write(`${JSON.stringify(reply)}\n`));
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(path, () => resolve());
  });
  chmodSync(path, 0o600);
  return server;
}

async function answer(line: string, byMethod: Map<string, Endpoint<any, any>>): Promise<object> {
  try {
    let parsed: { method?: unknown; request?: unknown };
    try {
      parsed = JSON.parse(line) as typeof parsed;
    } catch {
      throw invalidArgument("a request must be one JSON object per line");
    }
    const ep = typeof parsed.method === "string" ? byMethod.get(parsed.method) : undefined;
    if (!ep) throw invalidArgument(`no method ${JSON.stringify(parsed.method)}`);
    const request = decodeMessage(ep.method.request, Buffer.from(typeof parsed.request === "string" ? parsed.request : "", "base64"));
    const response = await ep.handle(request, undefined as never);
    return { response: Buffer.from(encodeMessage(ep.method.response, response)).toString("base64") };
  } catch (err) {
    const failure = toSimdcError(err);
    return { error: { code: failure.code, message: failure.message } };
  }
}

/**
 * Calls a supervisor method over the socket.
 * @throws SimdcError as the supervisor answered; UNAVAILABLE when nothing listens.
 */
export async function callControlSocket<Req, Res>(path: string, method: RpcMethod<Req, Res>, request: Req, timeoutMs = 15_000): Promise<Res> {
  const line = JSON.stringify({ method: method.method, request: Buffer.from(encodeMessage(method.request, request as never)).toString("base64") });
  const reply = await new Promise<string>((resolve, reject) => {
    const socket = createConnection(path);
    let buffered = "";
    const timer = wallClock.after(timeoutMs, () => {
      socket.destroy();
      reject(unavailable(`the supervisor did not answer ${method.method} within ${timeoutMs} ms`));
    });
    socket.on("connect", () => socket.write(`${line}\n`));
    socket.on("data", (chunk: Buffer) => {
      buffered += chunk.toString("utf8");
      const newline = buffered.indexOf("\n");
      if (newline < 0) return;
      timer.cancel();
      socket.end();
      resolve(buffered.slice(0, newline));
    });
    socket.on("error", (err) => {
      timer.cancel();
      reject(unavailable(`cannot reach the supervisor at ${path}: ${err.message}`, err));
    });
  });
  const parsed = JSON.parse(reply) as { response?: string; error?: { code: string; message: string } };
  if (parsed.error) throw new SimdcError(isErrorCodeName(parsed.error.code) ? parsed.error.code : "INTERNAL", parsed.error.message);
  return decodeMessage(method.response, Buffer.from(parsed.response ?? "", "base64"));
}
