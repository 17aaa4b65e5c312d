#!/usr/bin/env python3
"""Drives a running simdc datacenter from Python: discovers the services in
$SRV.INFO, lists hosts, creates a volume and a VM, waits for it to run, shows
typed errors, and cleans up. It generates the protobuf modules with protoc into
a temporary directory at start, so nothing generated is ever committed.

Progress goes to stderr; the last line on stdout is one JSON object with what
the run saw (e2e/python-client.test.ts asserts on it).

    python3 e2e/python/demo.py --server nats://127.0.0.1:4222 [--prefix simdc]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

# Running the demo must leave no __pycache__ in the repository.
sys.dont_write_bytecode = True

try:
    import google.protobuf  # noqa: F401  (checked here to say what to install)
except ImportError:
    sys.exit(
        f"demo: {sys.executable} cannot import google.protobuf: apt-get install python3-protobuf "
        "(Debian's package serves /usr/bin/python3) or run bash scripts/setup.sh"
    )

# Imported after the checks above, so a missing protobuf gets a clear message.
from simdc_client import NatsConnection, NatsError, Protos, SimdcClient, SimdcError, default_proto_root, generate_protos  # noqa: E402

RUNNING = "VM_STATE_RUNNING"
# States after which waiting longer changes nothing.
SETTLED = {RUNNING, "VM_STATE_FAILED", "VM_STATE_STOPPED"}


def say(line: str) -> None:
    print(f"demo: {line}", file=sys.stderr, flush=True)


def error_of(client: SimdcClient, rpc: str, **call_args) -> dict:
    """Calls an rpc that must fail (call_args as for SimdcClient.call) and returns its typed error."""
    try:
        client.call(rpc, **call_args)
    except SimdcError as err:
        say(f"{rpc} -> {err.code} ({err.http_status}): {err.message}")
        return {"rpc": rpc, "code": err.code, "httpStatus": err.http_status, "message": err.message}
    raise AssertionError(f"{rpc} succeeded but should have failed")


def discovered_rpcs(client: SimdcClient) -> tuple[dict[str, list[str]], list[str]]:
    """Maps each announced rpc to its subjects; lists endpoints whose rpc or types disagree with the protos."""
    subjects: dict[str, list[str]] = {}
    mismatches: list[str] = []
    for ep in client.endpoints:
        subjects.setdefault(ep.rpc, []).append(ep.subject)
        try:
            method = client.protos.method(ep.rpc)
        except KeyError:
            mismatches.append(f"{ep.subject}: {ep.rpc} is not in the protos")
            continue
        if (ep.request_type, ep.response_type) != (method.input_type.full_name, method.output_type.full_name):
            mismatches.append(f"{ep.subject}: announces {ep.request_type} -> {ep.response_type}")
    return {rpc: sorted(s) for rpc, s in sorted(subjects.items())}, mismatches


def run(args: argparse.Namespace, protos: Protos) -> dict:
    suffix = uuid.uuid4().hex[:6]
    volume_name, vm_name = f"py-boot-{suffix}", f"py-vm-{suffix}"
    with NatsConnection(args.server, name=f"simdc-python-demo-{suffix}") as nc:
        client = SimdcClient(nc, protos, args.prefix)

        client.refresh()
        rpcs, mismatches = discovered_rpcs(client)
        say(f"$SRV.INFO: {len(client.endpoints)} endpoints, {len(rpcs)} rpcs under {args.prefix}.")
        for rpc, subjects in rpcs.items():
            more = f" and {len(subjects) - 1} more" if len(subjects) > 1 else ""
            say(f"  {rpc:<45} {subjects[0]}{more}")

        hosts = client.call("simdc.v1.HostService/ListHosts").hosts
        host_rows = [{"id": h.id, "state": protos.enum_name("simdc.v1.HostState", h.state), "pcpus": h.capacity.pcpus} for h in hosts]
        say("hosts: " + (", ".join(f"{row['id']} {row['state']}" for row in host_rows) or "none"))

        volume = client.call("simdc.v1.StorageService/CreateVolume", name=volume_name, size_mib=64).volume
        say(f"created volume {volume.id} ({volume.size_mib} MiB) on SAN node {volume.san_node_id}")
        created = client.call(
            "simdc.v1.ComputeService/CreateVm",
            name=vm_name,
            spec={"vcpus": 1, "memory_mib": 256, "boot_volume": volume.id},
        )
        say(f"created vm {created.vm.id} on {created.vm.host_id}: {created.placement.reason}")

        states: list[str] = []
        deadline = time.monotonic() + args.timeout_s
        while True:
            vm = client.call("simdc.v1.ComputeService/GetVm", vm_id=vm_name).vm
            state = protos.enum_name("simdc.v1.VmState", vm.status.state)
            if not states or states[-1] != state:
                states.append(state)
                say(f"vm {vm_name}: {state} (generation {vm.generation}, observed {vm.status.observed_generation})")
            if state in SETTLED or time.monotonic() > deadline:
                break
            time.sleep(0.1)

        errors = {
            "notFound": error_of(client, "simdc.v1.ComputeService/GetVm", vm_id=f"no-such-vm-{suffix}"),
            "invalidArgument": error_of(client, "simdc.v1.ComputeService/CreateVm", name="Not A Name"),
            # Nobody serves an agent that does not exist, so NATS itself answers
            # 503 at once; the subject follows <prefix>.host.<agentId>.<hostId>.<Method>.
            "noResponders": error_of(
                client,
                "simdc.v1.HostAgentService/GetHostState",
                subject=f"{args.prefix}.host.no-such-agent-{suffix}.host-1.GetHostState",
                timeout_s=2.0,
            ),
        }

        deleted = False
        if not args.keep:
            client.call("simdc.v1.ComputeService/DeleteVm", vm_id=vm_name)
            client.call("simdc.v1.StorageService/DeleteVolume", volume_id=volume.id)
            errors["afterDelete"] = error_of(client, "simdc.v1.ComputeService/GetVm", vm_id=vm_name)
            deleted = True
            say(f"deleted vm {vm_name} and volume {volume.id}")

    return {
        "prefix": args.prefix,
        "rpcs": list(rpcs),
        "subjects": {rpc: s[0] for rpc, s in rpcs.items() if len(s) == 1},
        "mismatches": mismatches,
        "hosts": host_rows,
        "volume": {"id": volume.id, "sizeMib": volume.size_mib, "sanNodeId": volume.san_node_id},
        "vm": {
            "id": vm_name,
            "hostId": created.vm.host_id,
            "states": states,
            "finalState": states[-1],
            "observedGeneration": vm.status.observed_generation,
        },
        "errors": errors,
        "deleted": deleted,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="nats://127.0.0.1:4222", help="NATS URL (default %(default)s)")
    parser.add_argument("--prefix", default="simdc", help="subject prefix of the datacenter (default %(default)s)")
    parser.add_argument("--proto-dir", type=Path, default=default_proto_root(), help="the repo's proto/ directory")
    parser.add_argument("--timeout-s", type=float, default=30.0, help="how long to wait for the VM to run")
    parser.add_argument("--keep", action="store_true", help="leave the VM and volume in place")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="simdc-pb2-") as generated:
        try:
            generate_protos(args.proto_dir, Path(generated))
        except RuntimeError as err:
            say(str(err))
            return 1
        try:
            result = run(args, Protos(Path(generated)))
        except (NatsError, SimdcError) as err:
            say(f"failed: {err}")
            return 1
    print(json.dumps(result))
    return 0 if result["vm"]["finalState"] == RUNNING else 1


if __name__ == "__main__":
    sys.exit(main())
