// The supervisor behind `simdc up`: starts nats-server (with a user per role)
// and every service as a separate child process, serves SupervisorService
// on NATS (to the operator only) and on a unix socket (so a NATS fault can be
// undone), and stops everything on SIGINT/SIGTERM. It never restarts a
// process by itself: experiments must see failures.

import { mkdirSync, openSync, writeFileSync } from "node:fs";
import type { Server } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Bus, endpoint, supervisorService, type Endpoint, type EventName } from "@simdc/bus";
import { checkName, failedPrecondition, invalidArgument, notFound, SimdcError, WallClock, wallNowMs, type Clock, type Logger } from "@simdc/common";
import { simdc } from "@simdc/proto";
import { launchNodeProcess, type NodeProcess } from "../launch/node-process.js";
import { startNatsServer } from "../launch/nats-server.js";
import { controlSocketPath, serveControlSocket } from "./control-socket.js";
import { authorizationConfig, newPassword, operatorTokenHeader, usersFor, type RoleUser } from "./credentials.js";
import type { ProcessPlan } from "./topology.js";

import v1 = simdc.v1;

const packagesDir = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

/** How every process of the datacenter runs: its seed and its clock. */
export interface RunSettings {
  seed: number;
  timeScale: number;
  timeOriginMs: number;
}

export interface SupervisorOptions {
  dataDir: string;
  natsBinary: string;
  natsPort: number;
  prefix: string;
  run: RunSettings;
  /** Flags every service of a role gets (heartbeat policy and the like). */
  extraArgs: Partial<Record<ProcessPlan["role"], string[]>>;
  logger: Logger;
  /** Human-readable progress for the terminal. */
  say: (line: string) => void;
}

/** What the supervisor needs of a started process, nats-server or a service. */
type Started = Pick<NodeProcess, "child" | "pid" | "stop">;

interface Managed {
  plan: ProcessPlan | null;
  name: string;
  role: string;
  logFile: string;
  proc: Started | null;
  state: v1.ProcessState;
  exitReason: string;
  restarts: number;
  startedAtMs: number;
  /** Set while the supervisor itself stops the process, so its exit is not reported as a fault. */
  stopping: boolean;
}

/** Where `simdc up` keeps the credentials of each role: <data dir>/auth/<user>.json. */
export function credentialPath(dataDir: string, user: string): string {
  return join(dataDir, "auth", `${user}.json`);
}

export class Supervisor {
  private readonly managed = new Map<string, Managed>();
  private bus: Bus | null = null;
  private socket: Server | null = null;
  private users = new Map<string, RoleUser>();
  /** What a request over NATS must carry to be the operator's (the socket needs none: its file mode is the check). */
  private readonly operatorToken = newPassword();
  natsUrl = "";
  /** Called after every start or restart of a process (the record of pids is rewritten). */
  onStarted: () => void = () => undefined;

  /** The run's simulated time, which the services' events are stamped with too. */
  private readonly clock: Clock;

  constructor(private readonly options: SupervisorOptions) {
    this.clock = new WallClock(options.run.timeScale, options.run.timeOriginMs);
  }

  get logsDir(): string {
    return join(this.options.dataDir, "logs");
  }

  /** The credentials `up` made for `user` (operator, observer, a process name). */
  credentialOf(user: string): { user: string; password: string } {
    const found = this.users.get(user);
    if (!found) throw notFound(`no NATS user ${user}`);
    return { user: found.user, password: found.password };
  }

  /** Writes the credentials, starts nats-server and waits for it; then every planned service. */
  async start(plans: ProcessPlan[]): Promise<Bus> {
    mkdirSync(this.logsDir, { recursive: true });
    this.writeCredentials(plans);
    const nats: Managed = this.entry(null, "nats", "nats-server");
    this.managed.set("nats", nats);
    await this.startNats(nats);
    this.natsUrl = `nats://127.0.0.1:${this.options.natsPort}`;
    const supervisor = this.users.get("supervisor")!;
    this.bus = await Bus.connect({
      servers: this.natsUrl,
      prefix: this.options.prefix,
      processId: "supervisor",
      role: "supervisor",
      logger: this.options.logger,
      seed: this.options.run.seed,
      user: supervisor.user,
      password: supervisor.password,
      connectTimeoutMs: 10_000,
    });
    await this.bus.followFaultRules();
    // Kept from before the first service starts, so the history has every registration.
    await this.bus.ensureEventHistory();
    const endpoints: Endpoint<any, any>[] = [
      endpoint(supervisorService.ListProcesses, () => ({
        processes: [...this.managed.values()].map((m) => this.view(m)),
        seed: this.options.run.seed,
        timeScale: this.options.run.timeScale,
      })),
      endpoint(supervisorService.SignalProcess, (req) => this.signal(req)),
    ];
    // Over NATS only the operator's token opens the door; the socket is the operator's by its file mode.
    const guarded = endpoints.map((ep) =>
      endpoint(ep.method, (request, msg) => {
        if (msg.headers?.get(operatorTokenHeader) !== this.operatorToken) {
          throw new SimdcError("PERMISSION_DENIED", `only the operator drives the supervisor (its token is in ${credentialPath(this.options.dataDir, "operator")})`);
        }
        return ep.handle(request, msg);
      }),
    );
    await this.bus.serve({ role: "supervisor", scopeId: "supervisor", description: "simdc up: process faults" }, guarded);
    this.socket = await serveControlSocket(controlSocketPath(this.options.dataDir), endpoints);
    for (const plan of plans) {
      const m = this.entry(plan, plan.name, plan.role);
      this.managed.set(plan.name, m);
      this.startService(m);
    }
    return this.bus;
  }

  /** nats.conf with a user per role, and each role's credentials, readable by the operator only. */
  private writeCredentials(plans: ProcessPlan[]): void {
    const dir = join(this.options.dataDir, "auth");
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const users = usersFor(this.options.prefix, plans);
    this.users = new Map(users.map((u) => [u.user, u]));
    writeFileSync(join(dir, "nats.conf"), authorizationConfig(users), { mode: 0o600 });
    for (const u of users) {
      const token = u.user === "operator" ? { supervisorToken: this.operatorToken } : {};
      writeFileSync(credentialPath(this.options.dataDir, u.user), `${JSON.stringify({ user: u.user, password: u.password, ...token })}\n`, { mode: 0o600 });
    }
  }

  private entry(plan: ProcessPlan | null, name: string, role: string): Managed {
    return {
      plan,
      name,
      role,
      logFile: join(this.logsDir, `${name}.log`),
      proc: null,
      state: v1.ProcessState.PROCESS_STATE_UNSPECIFIED,
      exitReason: "",
      restarts: 0,
      startedAtMs: 0,
      stopping: false,
    };
  }

  private async startNats(m: Managed): Promise<void> {
    const handle = await startNatsServer(this.options.natsBinary, {
      port: this.options.natsPort,
      storeDir: join(this.options.dataDir, "nats"),
      configFile: join(this.options.dataDir, "auth", "nats.conf"),
      logFd: openSync(m.logFile, "a"),
    });
    this.track(m, handle);
  }

  private startService(m: Managed): void {
    const plan = m.plan!;
    const { run } = this.options;
    const user = this.users.get(plan.name)!;
    const shared = ["--nats-url", this.natsUrl, "--prefix", this.options.prefix, ...(this.options.extraArgs[plan.role] ?? [])];
    const proc = launchNodeProcess({
      script: join(packagesDir, plan.role, "dist", "main.js"),
      args: [...plan.args, ...shared],
      // Secrets and the run's settings go in the environment: flags show in ps.
      env: {
        ...process.env,
        SIMDC_NATS_USER: user.user,
        SIMDC_NATS_PASSWORD: user.password,
        SIMDC_SEED: String(run.seed),
        SIMDC_TIME_SCALE: String(run.timeScale),
        SIMDC_TIME_ORIGIN_MS: String(run.timeOriginMs),
      },
      logFile: m.logFile,
      detached: true,
    });
    this.track(m, proc);
  }

  private track(m: Managed, proc: Started): void {
    const pid = proc.pid;
    m.proc = proc;
    m.state = v1.ProcessState.PROCESS_STATE_RUNNING;
    this.onStarted();
    m.exitReason = "";
    m.startedAtMs = wallNowMs();
    m.stopping = false;
    proc.child.once("exit", (code, signal) => {
      if (m.proc !== proc) return;
      m.state = v1.ProcessState.PROCESS_STATE_EXITED;
      m.exitReason = signal ?? `exit code ${code}`;
      if (m.stopping) return;
      this.options.say(`${m.name} (pid ${pid}) exited: ${m.exitReason}; not restarting (simdc fault restart ${m.name})`);
      this.options.logger.warn({ process: m.name, pid, reason: m.exitReason }, "process exited");
      this.publish(m.name, "exited", v1.EventKind.EVENT_KIND_PROCESS_EXITED, `${m.name} exited: ${m.exitReason}`);
    });
  }

  /** Pid of each process that has been started, by name. */
  pids(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const m of this.managed.values()) if (m.proc) out[m.name] = m.proc.pid;
    return out;
  }

  private view(m: Managed): v1.ManagedProcess {
    return v1.ManagedProcess.create({
      name: m.name,
      role: m.role,
      pid: m.proc?.pid ?? 0,
      state: m.state,
      exitReason: m.exitReason,
      hostIds: m.plan?.hostIds ?? [],
      logFile: m.logFile,
      restarts: m.restarts,
      startedAtMs: m.startedAtMs,
    });
  }

  private async signal(req: v1.SignalProcessRequest): Promise<v1.SignalProcessResponse.$Properties> {
    const name = checkName("name", req.name);
    const m = this.managed.get(name);
    if (!m) throw notFound(`no process named ${name} (simdc status lists them)`);
    const running = m.state === v1.ProcessState.PROCESS_STATE_RUNNING || m.state === v1.ProcessState.PROCESS_STATE_PAUSED;
    const pid = m.proc?.pid ?? 0;
    switch (req.action) {
      case v1.ProcessAction.PROCESS_ACTION_KILL:
        if (!running) throw failedPrecondition(`${name} is not running`);
        process.kill(pid, "SIGKILL");
        break;
      case v1.ProcessAction.PROCESS_ACTION_PAUSE:
        if (m.state !== v1.ProcessState.PROCESS_STATE_RUNNING) throw failedPrecondition(`${name} is not running`);
        process.kill(pid, "SIGSTOP");
        m.state = v1.ProcessState.PROCESS_STATE_PAUSED;
        break;
      case v1.ProcessAction.PROCESS_ACTION_RESUME:
        if (m.state !== v1.ProcessState.PROCESS_STATE_PAUSED) throw failedPrecondition(`${name} is not paused`);
        process.kill(pid, "SIGCONT");
        m.state = v1.ProcessState.PROCESS_STATE_RUNNING;
        break;
      case v1.ProcessAction.PROCESS_ACTION_RESTART:
        if (running) await this.stopOne(m);
        m.restarts += 1;
        if (m.plan) this.startService(m);
        else await this.startNats(m);
        break;
      default:
        throw invalidArgument(`action ${req.action} is not a known ProcessAction`);
    }
    const action = v1.ProcessAction[req.action]!.replace("PROCESS_ACTION_", "").toLowerCase() as "kill" | "pause" | "resume" | "restart";
    this.options.say(`fault: ${action} ${name}`);
    this.options.logger.info({ process: name, action, pid }, "process fault injected");
    this.publish(name, action, v1.EventKind.EVENT_KIND_PROCESS_SIGNALED, `${action} ${name} (pid ${pid})`, req.cause || "cli");
    if (req.action === v1.ProcessAction.PROCESS_ACTION_KILL) await this.exited(m);
    return { process: this.view(m) };
  }

  private async exited(m: Managed): Promise<void> {
    const child = m.proc?.child;
    if (!child) return;
    if (child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolve) => child.once("exit", () => resolve()));
  }

  private async stopOne(m: Managed): Promise<void> {
    if (!m.proc || m.state === v1.ProcessState.PROCESS_STATE_EXITED) return;
    m.stopping = true;
    await m.proc.stop();
  }

  private publish(name: string, eventName: EventName, kind: v1.EventKind, message: string, cause = ""): void {
    // With NATS down (a fault) the bus reports the failed publish itself; the log line stands.
    this.bus?.publish(this.bus.subjects.event("process", name, eventName), v1.Event, {
      kind,
      objectId: name,
      timeMs: this.clock.nowMs(),
      message,
      source: "supervisor",
      cause,
    });
  }

  /** Stops agents first, then SAN nodes, the controllers, and NATS last. */
  async stop(): Promise<void> {
    this.socket?.close();
    const order = ["host-agent", "san-storage", "controller"];
    for (const role of order) {
      await Promise.all([...this.managed.values()].filter((m) => m.role === role).map((m) => this.stopOne(m)));
    }
    // The connection may already be gone (NATS killed by a fault); nothing is left to flush then.
    await this.bus?.close().catch(() => undefined);
    const nats = this.managed.get("nats");
    if (nats) await this.stopOne(nats);
  }
}
