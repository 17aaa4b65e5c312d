"""A minimal NATS client and typed simdc calls, written with nothing but the
Python standard library, python3-protobuf and the code protoc generates from
proto/simdc/v1/*.proto. It exists to prove simdc's API needs no TypeScript.

It owns the NATS text protocol over one TCP socket (INFO, CONNECT, PING/PONG,
SUB, UNSUB, PUB, MSG, HMSG), synchronously and single-threaded, and the mapping
of replies to SimdcError. It must not grow a subject table: subjects come from
$SRV.INFO, or else from the documented convention <prefix>.api.v1.<Service>.<Method>.
It does no TLS, no reconnects and sends no headers; a real client would.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

# A control line (INFO, MSG, ...) longer than this is a broken peer, not a message.
CONTROL_LINE_BYTES_MAX = 64 * 1024
# Socket reads are at most this large; a message may span many reads.
READ_CHUNK_BYTES = 64 * 1024
# Messages queued for one subscription before the client refuses to buffer more.
PENDING_MSGS_MAX = 10_000
CALL_TIMEOUT_S_DEFAULT = 5.0
# request_many() stops when no further reply came for this long.
STALL_S_DEFAULT = 0.3


class NatsError(Exception):
    """The connection or the protocol failed (not an error reply from a service)."""


@dataclass
class Msg:
    """One message delivered by MSG or HMSG."""

    subject: str
    reply: str | None
    data: bytes
    # Header names as sent; values in order. Look up with header().
    headers: dict[str, list[str]] = field(default_factory=dict)
    # The status of an HMSG ("NATS/1.0 503"), None when it has none.
    status: int | None = None
    description: str = ""

    def header(self, name: str) -> str | None:
        """The first value of a header, matched without regard to case."""
        wanted = name.lower()
        for key, values in self.headers.items():
            if key.lower() == wanted and values:
                return values[0]
        return None


def parse_header_block(block: bytes) -> tuple[int | None, str, dict[str, list[str]]]:
    """Parses "NATS/1.0[ <status>[ <description>]]\\r\\n(<Key>: <value>\\r\\n)*\\r\\n".

    Returns (status or None, description, headers).
    Raises NatsError when the block does not start with NATS/1.0.
    """
    lines = block.decode("utf-8", errors="replace").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if version != "NATS/1.0":
        raise NatsError(f"bad header block: {lines[0]!r}")
    rest = rest.strip()
    status: int | None = None
    description = ""
    if rest:
        code, _, description = rest.partition(" ")
        if code.isdigit():
            status = int(code)
        else:
            description = rest
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise NatsError(f"bad header line: {line!r}")
        headers.setdefault(name.strip(), []).append(value.strip())
    return status, description.strip(), headers


class NatsConnection:
    """One synchronous connection to a NATS server.

    Incoming messages are read only while a caller waits (next_msg, request,
    flush), so nothing happens behind the caller's back; server PINGs are
    answered whenever the socket is read.
    """

    def __init__(self, url: str = "nats://127.0.0.1:4222", name: str = "simdc-python", timeout_s: float = 5.0):
        parsed = urlparse(url if "://" in url else f"nats://{url}")
        if parsed.scheme not in ("nats", ""):
            raise NatsError(f"only nats:// URLs are supported, got {url}")
        self.server_info: dict[str, Any] = {}
        self._buf = bytearray()
        self._pending: dict[int, deque[Msg]] = {}
        self._next_sid = 1
        self._pongs_due = 0
        self._closed = False
        try:
            self._sock = socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 4222), timeout=timeout_s)
        except OSError as err:
            raise NatsError(f"cannot connect to {url}: {err}") from err
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        deadline = time.monotonic() + timeout_s
        op = self._read_op(deadline)
        if op is None or op[0] != "INFO":
            raise NatsError(f"{url} did not greet with INFO")
        if self.server_info.get("tls_required"):
            raise NatsError(f"{url} requires TLS, which this minimal client does not speak")
        connect: dict[str, Any] = {
            "verbose": False,
            "pedantic": False,
            "lang": "python-minimal",
            "version": "0.1.0",
            "protocol": 1,
            "name": name,
            # headers lets us read service errors; no_responders turns a request
            # nobody serves into an immediate 503 instead of a timeout.
            "headers": True,
            "no_responders": True,
        }
        if parsed.username and parsed.password is not None:
            connect["user"], connect["pass"] = unquote(parsed.username), unquote(parsed.password)
        elif parsed.username:
            connect["auth_token"] = unquote(parsed.username)
        self._send(b"CONNECT " + json.dumps(connect).encode() + b"\r\n")
        self.flush(timeout_s)

    # --- public operations -------------------------------------------------

    def publish(self, subject: str, data: bytes = b"", reply: str | None = None) -> None:
        """Publishes data; raises NatsError when it exceeds the server's max_payload."""
        max_payload = int(self.server_info.get("max_payload", 1024 * 1024))
        if len(data) > max_payload:
            raise NatsError(f"message of {len(data)} bytes exceeds the server's max_payload {max_payload}")
        head = f"PUB {subject} {reply} {len(data)}" if reply else f"PUB {subject} {len(data)}"
        self._send(head.encode() + b"\r\n" + data + b"\r\n")

    def subscribe(self, subject: str) -> int:
        """Subscribes and returns the subscription id for next_msg/unsubscribe."""
        sid = self._next_sid
        self._next_sid += 1
        self._pending[sid] = deque()
        self._send(f"SUB {subject} {sid}\r\n".encode())
        return sid

    def unsubscribe(self, sid: int) -> None:
        """Ends a subscription; messages already in flight for it are dropped."""
        if self._pending.pop(sid, None) is not None and not self._closed:
            self._send(f"UNSUB {sid}\r\n".encode())

    def next_msg(self, sid: int, timeout_s: float) -> Msg | None:
        """The next message of a subscription, or None when none came in time."""
        deadline = time.monotonic() + timeout_s
        while True:
            queue = self._pending.get(sid)
            if queue is None:
                raise NatsError(f"subscription {sid} is not active")
            if queue:
                return queue.popleft()
            if self._read_op(deadline) is None:
                return None

    def request(self, subject: str, data: bytes = b"", timeout_s: float = CALL_TIMEOUT_S_DEFAULT) -> Msg | None:
        """Sends a request to a fresh inbox; returns the first reply, or None on timeout."""
        sid, inbox = self._inbox()
        try:
            self.publish(subject, data, reply=inbox)
            return self.next_msg(sid, timeout_s)
        finally:
            self.unsubscribe(sid)

    def request_many(
        self, subject: str, data: bytes = b"", timeout_s: float = CALL_TIMEOUT_S_DEFAULT, stall_s: float = STALL_S_DEFAULT
    ) -> list[Msg]:
        """Collects every reply (as for $SRV.INFO, which each service answers).

        Waits up to timeout_s for the first reply, then stops once no reply came
        for stall_s. A no-responders status ends it with the replies so far.
        """
        sid, inbox = self._inbox()
        replies: list[Msg] = []
        try:
            self.publish(subject, data, reply=inbox)
            deadline = time.monotonic() + timeout_s
            while True:
                wait_s = deadline - time.monotonic() if not replies else stall_s
                if wait_s <= 0:
                    break
                msg = self.next_msg(sid, wait_s)
                if msg is None or (msg.status == 503 and not msg.data):
                    break
                replies.append(msg)
        finally:
            self.unsubscribe(sid)
        return replies

    def flush(self, timeout_s: float = CALL_TIMEOUT_S_DEFAULT) -> None:
        """PING and wait for the PONG: everything sent so far has reached the server."""
        self._pongs_due += 1
        target = self._pongs_due - 1
        self._send(b"PING\r\n")
        deadline = time.monotonic() + timeout_s
        while self._pongs_due > target:
            if self._read_op(deadline) is None:
                raise NatsError(f"no PONG within {timeout_s} s")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.close()
        except OSError:
            pass  # Closing a socket the peer already dropped is not worth reporting.

    def __enter__(self) -> NatsConnection:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- protocol ----------------------------------------------------------

    def _inbox(self) -> tuple[int, str]:
        inbox = f"_INBOX.{uuid.uuid4().hex}"
        return self.subscribe(inbox), inbox

    def _send(self, data: bytes) -> None:
        if self._closed:
            raise NatsError("connection is closed")
        try:
            self._sock.sendall(data)
        except OSError as err:
            self.close()
            raise NatsError(f"write failed: {err}") from err

    def _read_op(self, deadline: float) -> tuple[str, Any] | None:
        """Reads and handles one protocol operation; None when the deadline passed first."""
        while True:
            op = self._parse_op()
            if op is not None:
                return op
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(READ_CHUNK_BYTES)
            except socket.timeout:
                return None
            except OSError as err:
                self.close()
                raise NatsError(f"read failed: {err}") from err
            if not chunk:
                self.close()
                raise NatsError("the server closed the connection")
            self._buf += chunk

    def _parse_op(self) -> tuple[str, Any] | None:
        """Consumes one complete operation from the buffer, or nothing if it is incomplete."""
        end = self._buf.find(b"\r\n")
        if end < 0:
            if len(self._buf) > CONTROL_LINE_BYTES_MAX:
                raise NatsError("control line too long")
            return None
        line = bytes(self._buf[:end]).decode("utf-8", errors="replace")
        verb, _, rest = line.partition(" ")
        verb = verb.upper()
        if verb in ("MSG", "HMSG"):
            args = rest.split()
            if verb == "MSG" and len(args) in (3, 4):
                subject, sid, reply, header_len, total_len = args[0], args[1], (args[2] if len(args) == 4 else None), 0, args[-1]
            elif verb == "HMSG" and len(args) in (4, 5):
                subject, sid, reply, header_len, total_len = args[0], args[1], (args[2] if len(args) == 5 else None), args[-2], args[-1]
            else:
                raise NatsError(f"malformed {verb}: {line!r}")
            try:
                header_bytes, total_bytes = int(header_len), int(total_len)
            except ValueError:
                raise NatsError(f"malformed {verb}: {line!r}") from None
            if not 0 <= header_bytes <= total_bytes:
                raise NatsError(f"malformed {verb}: {line!r}")
            start = end + 2
            # The payload and its closing CRLF may not have arrived yet.
            if len(self._buf) < start + total_bytes + 2:
                return None
            body = bytes(self._buf[start : start + total_bytes])
            del self._buf[: start + total_bytes + 2]
            msg = Msg(subject=subject, reply=reply, data=body[header_bytes:])
            if header_bytes:
                msg.status, msg.description, msg.headers = parse_header_block(body[:header_bytes])
            queue = self._pending.get(int(sid))
            # A message for a subscription we already ended is dropped.
            if queue is not None:
                if len(queue) >= PENDING_MSGS_MAX:
                    raise NatsError(f"more than {PENDING_MSGS_MAX} unread messages on {subject}")
                queue.append(msg)
            return (verb, msg)
        del self._buf[: end + 2]
        if verb == "PING":
            self._send(b"PONG\r\n")
        elif verb == "PONG":
            self._pongs_due = max(0, self._pongs_due - 1)
        elif verb == "INFO":
            self.server_info = json.loads(rest)
        elif verb == "-ERR":
            self.close()
            raise NatsError(f"server error: {rest.strip()}")
        elif verb != "+OK":
            raise NatsError(f"unknown protocol operation: {line!r}")
        return (verb, rest)


# --- simdc ------------------------------------------------------------------


class SimdcError(Exception):
    """An error reply from simdc (or no reply at all), typed by its ErrorCode.

    code is the ErrorCode name without its ERROR_CODE_ prefix ("NOT_FOUND");
    http_status is the number from Nats-Service-Error-Code (404).
    """

    def __init__(self, code: str, http_status: int, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.http_status = http_status
        self.message = message


def generate_protos(proto_root: Path, out_dir: Path) -> None:
    """Runs protoc --python_out=out_dir over every proto/simdc/v1/*.proto.

    Raises RuntimeError saying what to install when protoc is missing or fails.
    """
    protoc = shutil.which("protoc")
    if protoc is None:
        raise RuntimeError("protoc is not installed: apt-get install protobuf-compiler (or run bash scripts/setup.sh)")
    files = sorted(str(p.relative_to(proto_root)) for p in (proto_root / "simdc" / "v1").glob("*.proto"))
    if not files:
        raise RuntimeError(f"no .proto files under {proto_root / 'simdc' / 'v1'}")
    result = subprocess.run(
        [protoc, f"--python_out={out_dir}", f"-I{proto_root}", *files], cwd=proto_root, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"protoc failed: {result.stderr.strip()}")


class Protos:
    """The generated modules, looked up by proto names rather than Python imports."""

    def __init__(self, generated_dir: Path):
        sys.path.insert(0, str(generated_dir))
        self.modules = {}
        for path in sorted((generated_dir / "simdc" / "v1").glob("*_pb2.py")):
            module = importlib.import_module(f"simdc.v1.{path.stem}")
            self.modules[module.DESCRIPTOR.name] = module
        if not self.modules:
            raise RuntimeError(f"no generated modules in {generated_dir}")
        self.pool = next(iter(self.modules.values())).DESCRIPTOR.pool

    def method(self, rpc: str):
        """The MethodDescriptor of "simdc.v1.ComputeService/CreateVm"; KeyError when unknown."""
        return self.pool.FindMethodByName(rpc.replace("/", "."))

    def message_class(self, descriptor):
        """The generated class of a message descriptor (every simdc message is top level)."""
        return getattr(self.modules[descriptor.file.name], descriptor.name)

    def error_code(self, name: str) -> int | None:
        """The ErrorCode number of "NOT_FOUND", or None when simdc has no such code."""
        enum = self.pool.FindEnumTypeByName("simdc.v1.ErrorCode")
        value = enum.values_by_name.get(f"ERROR_CODE_{name}")
        return value.number if value is not None else None

    def enum_name(self, enum_full_name: str, number: int) -> str:
        value = self.pool.FindEnumTypeByName(enum_full_name).values_by_number.get(number)
        return value.name if value is not None else str(number)


@dataclass
class Endpoint:
    """One endpoint a running service announced in $SRV.INFO."""

    rpc: str
    subject: str
    service: str
    request_type: str
    response_type: str


def discover(nc: NatsConnection, prefix: str, timeout_s: float = 2.0) -> list[Endpoint]:
    """Asks every NATS service for $SRV.INFO and keeps simdc's endpoints under `prefix`.

    An endpoint is simdc's when its metadata names an rpc; it is under prefix
    when its subject is <prefix>.api.v1.<Service>.<Method> (a registration:
    <prefix>.api.v1.<Service>.<Method>.*, the caller's id in the last token),
    <prefix>.host.<agentId>.*.<Method> (an agent serving all its hosts) or
    <prefix>.<san|ctl>.<id>.<Method>, with <Method> the rpc's method, so a
    datacenter whose prefix merely starts with ours ("simdc.b") is told apart.
    """
    endpoints: list[Endpoint] = []
    for reply in nc.request_many("$SRV.INFO", b"", timeout_s=timeout_s):
        info = json.loads(reply.data)
        for ep in info.get("endpoints") or []:
            meta = ep.get("metadata") or {}
            subject = ep.get("subject", "")
            rpc = meta.get("rpc", "")
            if not rpc or not subject.startswith(prefix + "."):
                continue
            tokens = subject[len(prefix) + 1 :].split(".")
            method = rpc.rpartition("/")[2]
            if tokens[:2] == ["api", "v1"]:
                shape_ok = len(tokens) == 4 or (len(tokens) == 5 and tokens[4] == "*")
                named = len(tokens) > 3 and tokens[3] == method
            else:
                shape_ok = (tokens[0] == "host" and len(tokens) == 4) or (tokens[0] in ("san", "ctl") and len(tokens) == 3)
                named = tokens[-1] == method
            if shape_ok and named:
                endpoints.append(
                    Endpoint(rpc, subject, info.get("name", ""), meta.get("request", ""), meta.get("response", ""))
                )
    return endpoints


class SimdcClient:
    """Typed calls on simdc's API: call("simdc.v1.HostService/ListHosts") -> ListHostsResponse.

    The subject of an rpc is the one a running service announced in $SRV.INFO
    when exactly one did; otherwise the API convention <prefix>.api.v1.<Service>.<Method>.
    """

    def __init__(self, nc: NatsConnection, protos: Protos, prefix: str = "simdc"):
        self.nc = nc
        self.protos = protos
        self.prefix = prefix
        self.endpoints: list[Endpoint] = []

    def refresh(self, timeout_s: float = 2.0) -> list[Endpoint]:
        """Re-reads $SRV.INFO; returns the endpoints found."""
        self.endpoints = discover(self.nc, self.prefix, timeout_s)
        return self.endpoints

    def subject_of(self, rpc: str) -> str:
        subjects = {ep.subject for ep in self.endpoints if ep.rpc == rpc}
        if len(subjects) == 1:
            return subjects.pop()
        # Several subjects means a host- or SAN-scoped method (one per host);
        # the caller must pick one with call(subject=...).
        if len(subjects) > 1:
            raise ValueError(f"{rpc} is served on several subjects; pass subject=: {sorted(subjects)}")
        service, _, method = rpc.rpartition("/")
        return f"{self.prefix}.api.v1.{service.rpartition('.')[2]}.{method}"

    def call(self, rpc: str, request=None, *, subject: str | None = None, timeout_s: float = CALL_TIMEOUT_S_DEFAULT, **fields):
        """Calls one rpc and returns its decoded response message.

        request is a message of the rpc's input type, or leave it out and pass
        its fields as keywords (nested messages as dicts).
        Raises SimdcError with the code the service sent, or UNAVAILABLE when
        nobody serves the subject or no reply came within timeout_s.
        """
        method = self.protos.method(rpc)
        request_class = self.protos.message_class(method.input_type)
        if request is None:
            request = request_class(**fields)
        elif request.DESCRIPTOR.full_name != method.input_type.full_name:
            raise TypeError(f"{rpc} takes {method.input_type.full_name}, got {request.DESCRIPTOR.full_name}")
        target = subject or self.subject_of(rpc)
        reply = self.nc.request(target, request.SerializeToString(), timeout_s)
        if reply is None:
            raise SimdcError("UNAVAILABLE", 503, f"{rpc} got no reply within {timeout_s} s on {target}")
        self._raise_if_error(rpc, target, reply)
        return self.protos.message_class(method.output_type).FromString(reply.data)

    def _raise_if_error(self, rpc: str, subject: str, reply: Msg) -> None:
        code_header = reply.header("Nats-Service-Error-Code")
        if code_header is not None:
            # "NOT_FOUND: vm x not found", the ErrorCode name without its prefix.
            description = reply.header("Nats-Service-Error") or ""
            name, sep, message = description.partition(": ")
            http_status = int(code_header) if code_header.isdigit() else 500
            if sep and self.protos.error_code(name) is not None:
                raise SimdcError(name, http_status, message)
            # A service that is not simdc's sent a code outside its error space.
            raise SimdcError("INTERNAL", http_status, description or f"error {code_header}")
        if reply.status == 503 and not reply.data:
            raise SimdcError("UNAVAILABLE", 503, f"nobody serves {rpc} on {subject}")
        if reply.status is not None and reply.status >= 400:
            raise SimdcError("INTERNAL", reply.status, f"unexpected status {reply.status} {reply.description}".strip())


def default_proto_root() -> Path:
    """proto/ of the repository this file lives in (e2e/python/ -> ../../proto)."""
    return Path(os.path.dirname(os.path.abspath(__file__))).parent.parent / "proto"
