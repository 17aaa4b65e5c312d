// Open vSwitch in user space as a test oracle (no kernel module, no systemd):
// an ovsdb-server and an ovs-vswitchd of our own in a temporary directory, a
// netdev bridge in secure fail mode with ports 1..N, flows loaded with
// ovs-ofctl, and packets traced with ofproto/trace. A trace is read back as
// the OpenFlow output ports (datapath ports mapped through dpif/show) and the
// final header fields, following the copies that ct(table=N) recirculates:
// ofproto/trace does not run the connection tracker, it resumes each copy
// with the ct_state the caller gives (--ct-next) and the ct action's zone.

import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const ovsInstalled = ["/usr/sbin/ovs-vswitchd", "/usr/sbin/ovsdb-server"].every((p) => existsSync(p));

export interface OvsTrace {
  /** Every pass's output ports: the packet's, then each recirculated copy's in the order OVS traced them. */
  outputs: number[];
  /** The last pass's final flow (the last copy's when ct(table=N) recirculated one), by ovs-ofctl name (those it printed). */
  final: Record<string, string>;
  /** How many copies a ct(table=N) recirculated. */
  recirculations: number;
  raw: string;
}

/** The rule of 79 `=` that ofproto/trace puts around the header of each recirculated pass. */
const passRule = /^={79}$/m;

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

  /**
   * Traces `packet` (ovs-ofctl field syntax) and the copies it recirculates.
   * `ctNext` gives, in order, the ct_state each copy a ct(table=N) sends on
   * resumes with (ofproto/trace's --ct-next; OVS's own default is trk,new).
   * @throws when OVS resumed more copies than `ctNext` gave states for (a
   * caller that gives states must give enough), or refused the packet.
   */
  trace(packet: string, ctNext: readonly string[] = []): OvsTrace {
    const raw = this.appctl("ofproto/trace", "br0", packet, ...ctNext.flatMap((flags) => ["--ct-next", flags]));
    // [first pass, header, pass, header, pass, ...]: a header names the recirculation and the ct_state it resumed with.
    const parts = raw.split(passRule);
    const passes = parts.filter((_, i) => i % 2 === 0);
    const headers = parts.filter((_, i) => i % 2 === 1);
    if (ctNext.length > 0 && headers.some((h) => h.includes("resume conntrack with default"))) {
      throw new Error(`ofproto/trace resumed more ct copies than the ${ctNext.length} --ct-next states given:\n${raw}`);
    }
    const outputs = passes.flatMap((pass) => this.outputsOf(pass));
    const last = passes[passes.length - 1]!;
    // "Final flow: unchanged" when no action rewrote a header: the flow the pass began with is the final one.
    const finalText = /^Final flow: (.*)$/m.exec(last)?.[1];
    const finalLine = finalText && finalText !== "unchanged" ? finalText : (/^Flow: (.*)$/m.exec(last)?.[1] ?? "");
    const final: Record<string, string> = {};
    for (const part of finalLine.split(",")) {
      const eq = part.indexOf("=");
      if (eq > 0) final[part.slice(0, eq)] = part.slice(eq + 1);
    }
    return { outputs, final, recirculations: headers.length, raw };
  }

  /** One pass's OpenFlow output ports, from its datapath actions. */
  private outputsOf(pass: string): number[] {
    const datapath = /^Datapath actions: (.*)$/m.exec(pass)?.[1] ?? "";
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
    return outputs;
  }

  stop(): void {
    for (const pid of ["vswitchd.pid", "ovsdb.pid"]) {
      const file = join(this.dir, pid);
      if (existsSync(file)) spawnSync("kill", [readFileSync(file, "utf8").trim()]);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
