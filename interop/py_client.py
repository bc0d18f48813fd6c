"""Interop check: the official Python MCP SDK (1.x or 2.x) as a client of our server.

Usage: python py_client.py URL

Connects (2.x: in its default "auto" mode, which probes `server/discover`
first and must fall back to `initialize`), lists and calls tools, keeps
state across calls, terminates the session on close, then checks that the
old session id gets 404. Prints one JSON line; exits non-zero on failure.
"""

import asyncio
import json
import sys
from importlib.metadata import version

MAJOR = int(version("mcp").split(".")[0])


def text_of(result):
    return "".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def run_v1(url):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with streamable_http_client(url) as (read, write, get_session_id):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            session_id = get_session_id()
            tools = [t.name for t in (await session.list_tools()).tools]
            echo = text_of(await session.call_tool("echo", {"text": "hello from python"}))
            first = await session.call_tool("counter", {"by": 3})
            second = await session.call_tool("counter", {})
    return init.protocolVersion, session_id, tools, echo, first, second


async def run_v2(url):
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    seen = {}

    async def remember(response):
        sid = response.headers.get("mcp-session-id")
        if sid:
            seen["id"] = sid

    http = httpx2.AsyncClient(event_hooks={"response": [remember]})
    async with Client(streamable_http_client(url, http_client=http)) as client:
        protocol = client.protocol_version
        tools = [t.name for t in (await client.list_tools()).tools]
        echo = text_of(await client.call_tool("echo", {"text": "hello from python"}))
        first = await client.call_tool("counter", {"by": 3})
        second = await client.call_tool("counter", {})
    await http.aclose()
    return protocol, seen.get("id"), tools, echo, first, second


async def status_with(url, session_id):
    """POST a ping with the old session id, as a client resuming would."""
    import urllib.request

    body = json.dumps({"jsonrpc": "2.0", "id": 99, "method": "ping"}).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "mcp-session-id": session_id,
        "mcp-protocol-version": "2025-11-25",
    })
    try:
        with urllib.request.urlopen(request) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


async def main(url):
    run = run_v1 if MAJOR == 1 else run_v2
    protocol, session_id, tools, echo, first, second = await run(url)
    def counter(result):
        structured = getattr(result, "structuredContent", None)
        if structured is None:  # 2.x renamed the field
            structured = result.structured_content
        return structured["counter"]

    counters = [counter(first), counter(second)]
    after = await status_with(url, session_id)
    report = {
        "sdk": f"mcp {version('mcp')}",
        "protocol": protocol,
        "session": session_id,
        "tools": tools,
        "echo": echo,
        "counters": counters,
        "after_close": after,
    }
    print(json.dumps(report))
    problems = []
    if protocol not in ("2025-11-25", "2025-06-18", "2025-03-26"):
        problems.append(f"negotiated {protocol!r}, expected a session revision")
    if not session_id:
        problems.append("no session id")
    if not {"echo", "counter", "slow"} <= set(tools):
        problems.append(f"tools {tools}")
    if echo != "hello from python":
        problems.append(f"echo {echo!r}")
    if counters != [3, 4]:
        problems.append(f"counter did not keep state: {counters}")
    if after != 404:
        problems.append(f"old session id got {after}, expected 404")
    if problems:
        print("FAIL: " + "; ".join(problems), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
