"""Proves the minimal NATS client's parser against a scripted fake server that
sends everything one byte at a time: the handshake, MSG payloads holding CRLF,
HMSG header blocks with simdc's service-error headers, the 503 no-responders
status, and a server PING in the middle of a reply. The real server is
exercised by demo.py in e2e/python-client.test.ts.

    python3 -m unittest discover -s e2e/python -p 'test_*.py'
"""

from __future__ import annotations

import socket
import sys
import tempfile
import threading
import unittest
from pathlib import Path

sys.dont_write_bytecode = True

from simdc_client import (  # noqa: E402  (after the bytecode switch, so the repo stays clean)
    NatsConnection,
    NatsError,
    Protos,
    SimdcClient,
    SimdcError,
    default_proto_root,
    generate_protos,
    parse_header_block,
)


class FakeServer:
    """Accepts one client and answers each PUB with reply_for(subject, payload).

    The reply is raw protocol bytes in which {inbox} and {sid} are replaced by
    the request's inbox and its subscription id; it is sent one byte per send.
    """

    def __init__(self, reply_for):
        self.reply_for = reply_for
        self.connect_line = b""
        self.pongs = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"nats://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _trickle(self, conn: socket.socket, data: bytes) -> None:
        for i in range(len(data)):
            conn.sendall(data[i : i + 1])

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        self.listener.close()
        with conn, conn.makefile("rb") as reader:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._trickle(conn, b'INFO {"server_id":"fake","max_payload":1048576,"headers":true}\r\n')
            sids: dict[str, str] = {}
            while line := reader.readline():
                verb, *args = line.decode().split()
                if verb == "CONNECT":
                    self.connect_line = line
                elif verb == "PING":
                    self._trickle(conn, b"PONG\r\n")
                elif verb == "PONG":
                    self.pongs += 1
                elif verb == "SUB":
                    sids[args[0]] = args[-1]
                elif verb == "PUB":
                    payload = reader.read(int(args[-1]) + 2)[:-2]
                    inbox = args[1]
                    reply = self.reply_for(args[0], payload)
                    self._trickle(conn, reply.replace(b"{sid}", sids[inbox].encode()).replace(b"{inbox}", inbox.encode()))


def hmsg(headers: bytes, payload: bytes = b"") -> bytes:
    return b"HMSG {inbox} {sid} %d %d\r\n%s%s\r\n" % (len(headers), len(headers) + len(payload), headers, payload)


class ParserTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.generated = tempfile.TemporaryDirectory(prefix="simdc-pb2-test-")
        generate_protos(default_proto_root(), Path(cls.generated.name))
        cls.protos = Protos(Path(cls.generated.name))

    @classmethod
    def tearDownClass(cls) -> None:
        cls.generated.cleanup()

    def test_header_block_with_status_and_repeated_headers(self) -> None:
        status, description, headers = parse_header_block(b"NATS/1.0 503 No Responders\r\nA: 1\r\nA: 2\r\n\r\n")
        self.assertEqual((status, description, headers), (503, "No Responders", {"A": ["1", "2"]}))
        self.assertEqual(parse_header_block(b"NATS/1.0\r\nX-Y: z: w\r\n\r\n"), (None, "", {"X-Y": ["z: w"]}))
        with self.assertRaises(NatsError):
            parse_header_block(b"HTTP/1.1 200\r\n\r\n")

    def test_fragmented_msg_with_crlf_in_payload_and_server_ping(self) -> None:
        payload = b"line one\r\nline two\r\n"
        server = FakeServer(lambda _s, data: b"PING\r\nMSG {inbox} {sid} %d\r\n%s\r\n" % (len(payload), payload))
        with NatsConnection(server.url) as nc:
            self.assertIn(b'"headers": true', server.connect_line)
            self.assertIn(b'"no_responders": true', server.connect_line)
            reply = nc.request("echo", b"hi", timeout_s=5)
            assert reply is not None
            self.assertEqual(reply.data, payload)
            nc.flush()
            self.assertEqual(server.pongs, 1)

    def test_service_error_headers_become_a_typed_error(self) -> None:
        headers = b"NATS/1.0\r\nNats-Service-Error: NOT_FOUND: vm vm-9 not found\r\nNats-Service-Error-Code: 404\r\n\r\n"
        server = FakeServer(lambda _s, _d: hmsg(headers))
        with NatsConnection(server.url) as nc:
            with self.assertRaises(SimdcError) as caught:
                SimdcClient(nc, self.protos).call("simdc.v1.ComputeService/GetVm", vm_id="vm-9")
        self.assertEqual((caught.exception.code, caught.exception.http_status), ("NOT_FOUND", 404))
        self.assertEqual(caught.exception.message, "vm vm-9 not found")

    def test_no_responders_status_is_unavailable(self) -> None:
        server = FakeServer(lambda _s, _d: hmsg(b"NATS/1.0 503\r\n\r\n"))
        with NatsConnection(server.url) as nc:
            with self.assertRaises(SimdcError) as caught:
                SimdcClient(nc, self.protos, "dc7").call("simdc.v1.HostService/ListHosts")
        self.assertEqual((caught.exception.code, caught.exception.http_status), ("UNAVAILABLE", 503))
        self.assertIn("dc7.api.v1.HostService.ListHosts", caught.exception.message)

    def test_reply_decodes_into_the_rpc_output_type(self) -> None:
        host = self.protos.message_class(self.protos.pool.FindMessageTypeByName("simdc.v1.ListHostsResponse"))
        body = host(hosts=[{"id": "host-1", "capacity": {"pcpus": 8}}]).SerializeToString()
        server = FakeServer(lambda _s, _d: hmsg(b"NATS/1.0\r\n\r\n", body))
        with NatsConnection(server.url) as nc:
            hosts = SimdcClient(nc, self.protos).call("simdc.v1.HostService/ListHosts").hosts
        self.assertEqual([(h.id, h.capacity.pcpus) for h in hosts], [("host-1", 8)])


if __name__ == "__main__":
    unittest.main()
