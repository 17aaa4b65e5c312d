// Open vSwitch in user space as a test oracle (no kernel module, no systemd):
// an ovsdb-server and an ovs-vswitchd of our own in a temporary directory, a
// netdev bridge in secure fail mode with ports 1..N, flows loaded with
// ovs-ofctl, and packets traced with ofproto/trace. A trace is read back as
// the OpenFlow output ports (datapath ports mapped through dpif/show) and the
// final header fields.

import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const ovsInstalled = ["/usr/sbin/ovs-vswitchd", "/usr/sbin/ovsdb-server"].every((p) => existsSync(p));

export interface OvsTrace {
  outputs: number[];
  /** The final flow's fields, by ovs-ofctl name (those it printed). */
  final: Record<string, string>;
  raw: string;
}

export class Ovs {
  private odpToOfport = new Map<string, number>();

  private constructor(
    readonly dir: string,
    private readonly env: NodeJS.ProcessEnv,
  ) {}

  static start(ports: number): Ovs {
    const dir = mkdtempSync(join(tmpdir(), "simdc-ovs-"));
    const env = { ...process.env, OVS_RUNDIR: dir, OVS_LOGDIR: dir, OVS_DBDIR: dir };
    const run = (cmd: string, args: string[]): void => void execFileSync(cmd, args, { env, stdio: "pipe" });
    run("ovsdb-tool", ["create", join(dir, "conf.db"), "/usr/share/openvswitch/vswitch.ovsschema"]);
    run("ovsdb-server", [join(dir, "conf.db"), `--remote=punix:${dir}/db.sock`, `--pidfile=${dir}/ovsdb.pid`, "--detach", `--log-file=${dir}/ovsdb.log`]);
    const vsctl = (...args: string[]): void => run("ovs-vsctl", [`--db=unix:${dir}/db.sock`, ...args]);
    vsctl("--no-wait", "init");
    run("ovs-vswitchd", [`unix:${dir}/db.sock`, `--pidfile=${dir}/vswitchd.pid`, "--detach", `--log-file=${dir}/vswitchd.log`]);
    vsctl("add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev", "fail-mode=secure");
    for (let p = 1; p <= ports; p++) vsctl("add-port", "br0", `p${p}`, "--", "set", "interface", `p${p}`, "type=internal", `ofport_request=${p}`);
    const ovs = new Ovs(dir, env);
    // "p2 2/3: (tap)": OpenFlow port 2 is datapath port 3.
    for (const m of ovs.appctl("dpif/show").matchAll(/^\s+(\S+) (\d+)\/(\d+):/gm)) ovs.odpToOfport.set(m[3]!, Number(m[2]));
    return ovs;
  }

  private appctl(...args: string[]): string {
    const ctl = readdirSync(this.dir).find((f) => f.startsWith("ovs-vswitchd.") && f.endsWith(".ctl"));
    return execFileSync("ovs-appctl", ["-t", join(this.dir, ctl!), ...args], { env: this.env, encoding: "utf8" });
  }

  /** Replaces the bridge's flows with those of `flows` (ovs-ofctl syntax, one a line). */
  loadFlows(flows: string[]): void {
    const file = join(this.dir, "flows.txt");
    writeFileSync(file, `${flows.join("\n")}\n`);
    const mgmt = `unix:${this.dir}/br0.mgmt`;
    execFileSync("ovs-ofctl", ["del-flows", mgmt], { env: this.env, stdio: "pipe" });
    execFileSync("ovs-ofctl", ["add-flows", mgmt, file], { env: this.env, stdio: "pipe" });
  }

  trace(packet: string): OvsTrace {
    const raw = this.appctl("ofproto/trace", "br0", packet);
    const datapath = /^Datapath actions: (.*)$/m.exec(raw)?.[1] ?? "";
    const outputs: number[] = [];
    // Top-level comma-separated items; plain numbers are datapath output ports.
    let depth = 0;
    let item = "";
    for (const c of `${datapath},`) {
      if (c === "(") depth += 1;
      if (c === ")") depth -= 1;
      if (c === "," && depth === 0) {
        if (/^\d+$/.test(item)) outputs.push(this.odpToOfport.get(item) ?? -1);
        item = "";
      } else item += c;
    }
    // "Final flow: unchanged" when no action rewrote a header: the flow traced is the final one.
    const finalText = /^Final flow: (.*)$/m.exec(raw)?.[1];
    const finalLine = finalText && finalText !== "unchanged" ? finalText : (/^Flow: (.*)$/m.exec(raw)?.[1] ?? "");
    const final: Record<string, string> = {};
    for (const part of finalLine.split(",")) {
      const eq = part.indexOf("=");
      if (eq > 0) final[part.slice(0, eq)] = part.slice(eq + 1);
    }
    return { outputs, final, raw };
  }

  stop(): void {
    for (const pid of ["vswitchd.pid", "ovsdb.pid"]) {
      const file = join(this.dir, pid);
      if (existsSync(file)) spawnSync("kill", [readFileSync(file, "utf8").trim()]);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
