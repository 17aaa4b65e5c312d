// Brings up the repository's own docker-compose.yml (the file users run) as
// one throw-away compose project with testcontainers, and gives tests handles
// on its containers and a bus to nats-1. It only starts, faults and removes
// containers; it never builds images (scripts/setup.sh --docker does) and
// never changes the compose file.

import { execFile, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import {
  DockerComposeEnvironment,
  getContainerRuntimeClient,
  Wait,
  type StartedDockerComposeEnvironment,
} from "testcontainers";

/** The repository root, where docker-compose.yml lives. */
export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..");

/** Startup of the whole project, health checks included (start_period is 60 s). */
export const composeStartupTimeoutMs = 150_000;

/** Whether a Docker engine answers here, and why not when it does not. */
export interface DockerProbe {
  ok: boolean;
  reason: string;
}

/** Asks the engine for its version; never throws. */
export function probeDocker(): DockerProbe {
  const info = spawnSync("docker", ["info", "--format", "{{.ServerVersion}}"], { encoding: "utf8", timeout: 15_000 });
  if (info.error) return { ok: false, reason: `cannot run docker: ${info.error.message}` };
  if (info.status !== 0) return { ok: false, reason: `docker info failed: ${(info.stderr || info.stdout).trim()}` };
  return { ok: true, reason: `engine ${info.stdout.trim()}` };
}

/**
 * The compose client options for testcontainers: the standalone v1
 * `docker-compose` when installed (Debian bookworm has only that), else the
 * `docker compose` v2 plugin.
 * @throws Error when neither is installed.
 */
function composeClientOptions(): { executable?: { standalone: true; executablePath: string } } {
  const v1 = spawnSync("docker-compose", ["version", "--short"], { encoding: "utf8", timeout: 15_000 });
  if (!v1.error && v1.status === 0) return { executable: { standalone: true, executablePath: "docker-compose" } };
  const v2 = spawnSync("docker", ["compose", "version", "--short"], { encoding: "utf8", timeout: 15_000 });
  if (!v2.error && v2.status === 0) return {};
  throw new Error("neither docker-compose nor `docker compose` is installed: run `bash scripts/setup.sh --docker`");
}

/** @throws Error naming the build command when an image the compose file uses is missing. */
function requireImages(): void {
  const images = [process.env["SIMDC_IMAGE"] ?? "simdc:local", process.env["NATS_IMAGE"] ?? "simdc-base:local"];
  const inspect = spawnSync("docker", ["image", "inspect", ...images], { encoding: "utf8", timeout: 15_000 });
  if (inspect.status !== 0) {
    throw new Error(
      `missing image among ${images.join(", ")}: run \`bash scripts/setup.sh --docker\` ` +
        `(or \`npm run build && bash deploy/build-images.sh\`): ${inspect.stderr.trim()}`,
    );
  }
}

/**
 * Makes the compose datacenter's NATS users when they are missing (what
 * `bash scripts/setup.sh --docker` does), so the project can start.
 * @throws Error when the generator fails.
 */
function ensureCredentials(): void {
  const made = spawnSync(process.execPath, [join(repoRoot, "deploy", "compose-credentials.mjs")], { encoding: "utf8", timeout: 30_000 });
  if (made.status !== 0) throw new Error(`deploy/compose-credentials.mjs failed: ${made.stderr || made.stdout}`);
}

/** The credentials the compose set-up made for `user` (operator, observer, a service name). */
export function composeCredential(user: string): { user: string; password: string } {
  return JSON.parse(readFileSync(join(repoRoot, "deploy", ".auth", "auth", `${user}.json`), "utf8")) as { user: string; password: string };
}

/**
 * Watches a project while it starts: testcontainers removes a project that
 * failed its health checks before it throws, and "unhealthy" alone says
 * nothing, so the first unhealthy container's checks and log are kept here.
 */
function watchStartup(projectName: string): { report(): string; stop(): void } {
  const docker = (...args: string[]): Promise<string> =>
    promisify(execFile)("docker", args, { timeout: 15_000 }).then(
      (r) => r.stdout.trim(),
      (err: unknown) => String(err),
    );
  let stopped = false;
  let report = "no container was seen unhealthy";
  void (async () => {
    while (!stopped) {
      const ids = (await docker("ps", "-aq", "--filter", `label=com.docker.compose.project=${projectName}`, "--filter", "health=unhealthy")).split("\n").filter(Boolean);
      if (ids.length) {
        const parts = await Promise.all(
          ids.map(async (id) => `--- ${await docker("inspect", "--format", "{{.Name}} {{.State.Status}} {{json .State.Health.Log}}", id)}\n${await docker("logs", "--tail", "20", id)}`),
        );
        report = parts.join("\n");
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 1_000));
    }
  })();
  return {
    report: () => report,
    stop: () => {
      stopped = true;
    },
  };
}

/** A running compose project of the repository's docker-compose.yml. */
export class ComposeProject {
  private constructor(
    readonly projectName: string,
    private readonly environment: StartedDockerComposeEnvironment,
  ) {}

  /**
   * Runs `up` on docker-compose.yml with nats-1's client port on a free host
   * port, and waits until every container's health check passes.
   * @throws Error when compose or an image is missing, or a service does not
   * become healthy within composeStartupTimeoutMs (the project is then removed).
   */
  static async up(): Promise<ComposeProject> {
    // The reaper image cannot be pulled here; afterAll removes the project.
    process.env["TESTCONTAINERS_RYUK_DISABLED"] = "true";
    requireImages();
    ensureCredentials();
    // Unique, so parallel runs and leftovers of a crashed run never collide.
    const projectName = `simdc-e2e-${randomBytes(4).toString("hex")}`;
    const startup = watchStartup(projectName);
    try {
      const environment = await new DockerComposeEnvironment(repoRoot, "docker-compose.yml")
        .withProjectName(projectName)
        .withClientOptions(composeClientOptions())
        // Pinned, so a caller's SIMDC_* settings cannot move the subjects the
        // tests use or hide the info-level logs they read; SIMDC_IMAGE and
        // NATS_IMAGE still choose the images.
        .withEnvironment({ SIMDC_NATS_PORT: "0", SIMDC_PREFIX: "simdc", SIMDC_DC: "dc1", SIMDC_LOG_LEVEL: "info" })
        .withDefaultWaitStrategy(Wait.forHealthCheck())
        .withStartupTimeout(composeStartupTimeoutMs)
        .up();
      return new ComposeProject(projectName, environment);
    } catch (err) {
      throw new Error(`${(err as Error).message}\n${startup.report()}`, { cause: err });
    } finally {
      startup.stop();
    }
  }

  /** The URL of nats-1's client port as published on 127.0.0.1. */
  natsUrl(): string {
    return `nats://127.0.0.1:${this.environment.getContainer(this.containerName("nats-1")).getMappedPort(4222)}`;
  }

  /**
   * The Docker container of a compose service (one replica each). Compose v1
   * names it `<project>_<service>_1`, v2 `<project>-<service>-1`, which
   * testcontainers shortens to `<service>-1`.
   * @throws Error when the service has no container.
   */
  containerName(service: string): string {
    for (const name of [`${service}-1`, `${this.projectName}_${service}_1`]) {
      try {
        this.environment.getContainer(name);
        return name;
      } catch {
        // Not this naming scheme; the other one is tried next.
      }
    }
    throw new Error(`compose project ${this.projectName} has no container for service ${service}`);
  }

  /** A dockerode handle on a service's container, valid while it is stopped too. */
  /** http://127.0.0.1:<the published port> of a service's container `port`. */
  httpUrl(service: string, port: number): string {
    return `http://127.0.0.1:${this.environment.getContainer(this.containerName(service)).getMappedPort(port)}`;
  }

  async container(service: string) {
    const client = await getContainerRuntimeClient();
    return client.container.getById(this.environment.getContainer(this.containerName(service)).getId());
  }

  /** The project's default network, which every service joins. */
  async network() {
    const client = await getContainerRuntimeClient();
    return client.container.dockerode.getNetwork(`${this.projectName}_default`);
  }

  /** Cuts a service's container off the project network (its process keeps running). */
  async disconnect(service: string): Promise<void> {
    const network = await this.network();
    await network.disconnect({ Container: (await this.container(service)).id, Force: true });
  }

  /** Joins a service's container to the project network again, with its service name as alias. */
  async reconnect(service: string): Promise<void> {
    const network = await this.network();
    await network.connect({ Container: (await this.container(service)).id, EndpointConfig: { Aliases: [service] } });
  }

  /** The last lines of a service's log, for failure reports. */
  async logTail(service: string, lines = 40): Promise<string> {
    const container = await this.container(service);
    const raw = (await container.logs({ stdout: true, stderr: true, tail: lines, follow: false })) as Buffer;
    return demultiplex(raw);
  }

  /** Removes the containers, network and volumes. */
  async down(): Promise<void> {
    await this.environment.down({ removeVolumes: true, timeout: 2_000 });
  }
}

/** Docker's log stream without its 8-byte frame headers (no TTY). */
function demultiplex(raw: Buffer): string {
  const out: string[] = [];
  let offset = 0;
  while (offset + 8 <= raw.length) {
    const size = raw.readUInt32BE(offset + 4);
    out.push(raw.subarray(offset + 8, offset + 8 + size).toString("utf8"));
    offset += 8 + size;
  }
  return out.join("");
}
