#!/usr/bin/env python3
"""Resident memory of a server through a spike of connections.

    spike.py PID HOST:PORT [CONNECTIONS] [AFTER_SECONDS]

Opens CONNECTIONS (20,000) keep-alive connections to HOST:PORT, sends one
sessionless 2026-07-28 `tools/call` of `echo` on each and reads its answer
(a connection the server closed to make room is counted, not retried),
then closes them all and samples the resident memory of PID every second
for AFTER_SECONDS (30). Prints one line per phase: before, during (at the
peak), and after. Needs an open-file limit above CONNECTIONS.
"""
import multiprocessing
import selectors
import socket
import sys
import time

BODY = ('{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo",'
        '"arguments":{"text":"spike"},"_meta":{'
        '"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
        '"io.modelcontextprotocol/clientCapabilities":{}}}}')


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def hold(host, port, count, request, ready, release):
    """Opens `count` connections, sends `request` on each and reads the
    answers; reports (opened, answered, closed) on `ready`, then holds the
    connections until `release` is set."""
    sel = selectors.DefaultSelector()
    socks = []
    for i in range(count):
        s = socket.socket()
        try:
            s.connect((host, port))
            s.sendall(request)
        except OSError as e:
            print(f"connection {i}: {e}", file=sys.stderr)
            s.close()
            break
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, bytearray())
        socks.append(s)
    answered = closed = 0
    pending = len(socks)
    deadline = time.time() + 120
    while pending and time.time() < deadline:
        for key, _ in sel.select(timeout=1):
            s, buf = key.fileobj, key.data
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, BlockingIOError):
                chunk = b""
            if not chunk:
                closed += 1
                pending -= 1
                sel.unregister(s)
                continue
            buf.extend(chunk)
            if b"\r\n\r\n" in buf and buf.endswith(b"}"):
                answered += 1
                pending -= 1
                sel.unregister(s)
    ready.put((len(socks), answered, closed))
    release.wait()
    for s in socks:
        s.close()


def main():
    pid = int(sys.argv[1])
    host, port = sys.argv[2].rsplit(":", 1)
    total = int(sys.argv[3]) if len(sys.argv) > 3 else 20000
    after = int(sys.argv[4]) if len(sys.argv) > 4 else 30
    request = (f"POST /mcp HTTP/1.1\r\nHost: {host}:{port}\r\n"
               "Accept: application/json, text/event-stream\r\n"
               "Content-Type: application/json\r\nMCP-Protocol-Version: 2026-07-28\r\n"
               "Mcp-Method: tools/call\r\nMcp-Name: echo\r\n"
               f"Content-Length: {len(BODY)}\r\n\r\n{BODY}").encode()
    before = rss_kib(pid)
    print(f"before: {before} KiB", flush=True)
    # A process may hold fewer sockets than the spike: several share it.
    per = 5000
    ready, release = multiprocessing.Queue(), multiprocessing.Event()
    workers = []
    started = time.time()
    for i in range(0, total, per):
        w = multiprocessing.Process(
            target=hold, args=(host, int(port), min(per, total - i), request, ready, release))
        w.start()
        workers.append(w)
    opened = answered = closed = 0
    for _ in workers:
        o, a, c = ready.get()
        opened, answered, closed = opened + o, answered + a, closed + c
    peak = rss_kib(pid)
    print(f"during: {peak} KiB with {opened} connections opened, {answered} answered, "
          f"{closed} closed by the server to make room, in {time.time() - started:.1f} s",
          flush=True)
    release.set()
    for w in workers:
        w.join()
    samples = []
    for _ in range(after):
        time.sleep(1)
        samples.append(rss_kib(pid))
    print(f"after: {samples[-1]} KiB {after} s after closing "
          f"({samples[-1] / max(before, 1):.2f}x before); "
          f"at 5 s {samples[min(4, len(samples) - 1)]} KiB", flush=True)


if __name__ == "__main__":
    main()
