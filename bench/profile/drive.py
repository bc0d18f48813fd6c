#!/usr/bin/env python3
"""Load for profiling an MCP server under valgrind: raw HTTP/1.1 keep-alive
connections sending the same requests as the criterion HTTP bench.

    drive.py HOST:PORT call|handshake N [CONNECTIONS]

`call`: each connection initializes once, then the connections send N
`tools/call` of `echo` in lock-step rounds (all send, then all read).
`modern`: N sessionless 2026-07-28 `tools/call` of `echo` in the same rounds.
`handshake`: N handshakes (initialize, notifications/initialized, DELETE),
in the same rounds. Exits non-zero on any unexpected answer.
"""
import re
import socket
import sys

INIT = ('{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":'
        '"2025-11-25","capabilities":{},"clientInfo":{"name":"bench","version":"1.0"}}}')
INITIALIZED = '{"jsonrpc":"2.0","method":"notifications/initialized"}'
CALL = ('{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo",'
        '"arguments":{"text":"benchmark"}}}')
MODERN = ('{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo",'
          '"arguments":{"text":"benchmark"},"_meta":{'
          '"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
          '"io.modelcontextprotocol/clientCapabilities":{},'
          '"io.modelcontextprotocol/clientInfo":{"name":"bench","version":"1.0"}}}}')


class Connection:
    def __init__(self, host, port):
        self.host, self.port = host, port
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, method, body, session=None, modern=False):
        head = (f"{method} /mcp HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                "Accept: application/json, text/event-stream\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n")
        if session:
            head += f"mcp-session-id: {session}\r\nmcp-protocol-version: 2025-11-25\r\n"
        if modern:
            head += ("MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\n"
                     "Mcp-Name: echo\r\n")
        self.sock.sendall((head + "\r\n" + body).encode())

    def recv(self):
        """Returns (status, session id header or None, body)."""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        head, rest = self.buf.split(b"\r\n\r\n", 1)
        if re.search(rb"(?i)transfer-encoding: *chunked", head):
            while b"0\r\n\r\n" not in rest:
                rest += self.sock.recv(65536)
            end = rest.index(b"0\r\n\r\n") + 5
            body, self.buf = rest[:end], rest[end:]
        else:
            m = re.search(rb"(?i)content-length: *(\d+)", head)
            length = int(m.group(1)) if m else 0
            while len(rest) < length:
                rest += self.sock.recv(65536)
            body, self.buf = rest[:length], rest[length:]
        sid = re.search(rb"(?i)mcp-session-id: *(\S+)", head)
        return int(head.split(b" ")[1]), (sid.group(1).decode() if sid else None), body


def expect(ok, what):
    if not ok:
        sys.exit(f"unexpected answer: {what}")


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    mode, total = sys.argv[2], int(sys.argv[3])
    count = int(sys.argv[4]) if len(sys.argv) > 4 else 64
    conns = [Connection(host, int(port)) for _ in range(count)]
    rounds = max(1, total // count)
    if mode == "call":
        sessions = []
        for c in conns:
            c.send("POST", INIT)
            status, sid, _ = c.recv()
            expect(status == 200 and sid, status)
            c.send("POST", INITIALIZED, sid)
            c.recv()
            sessions.append(sid)
        for _ in range(rounds):
            for c, sid in zip(conns, sessions):
                c.send("POST", CALL, sid)
            for c in conns:
                status, _, body = c.recv()
                expect(status == 200 and b"benchmark" in body, (status, body))
    elif mode == "modern":
        for _ in range(rounds):
            for c in conns:
                c.send("POST", MODERN, modern=True)
            for c in conns:
                status, _, body = c.recv()
                expect(status == 200 and b"benchmark" in body, (status, body))
    elif mode == "handshake":
        for _ in range(rounds):
            sessions = []
            for c in conns:
                c.send("POST", INIT)
            for c in conns:
                status, sid, _ = c.recv()
                expect(status == 200 and sid, status)
                sessions.append(sid)
            for c, sid in zip(conns, sessions):
                c.send("POST", INITIALIZED, sid)
            for c in conns:
                status, _, _ = c.recv()
                expect(status in (200, 202), status)
            for c, sid in zip(conns, sessions):
                c.send("DELETE", "", sid)
            for c in conns:
                status, _, _ = c.recv()
                expect(status == 200, status)
    else:
        sys.exit(f"unknown mode {mode!r}: call, modern or handshake")


if __name__ == "__main__":
    main()
