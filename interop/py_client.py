"""Interop check: the official Python MCP SDK (1.x or 2.x) as a client of our server.

Usage: python py_client.py URL

1.x (legacy): connects with `initialize`, lists and calls tools, keeps state
across calls in the session, terminates the session on close, then checks
that the old session id gets 404.

2.x (modern): connects in its default "auto" mode, which probes
`server/discover` and must land on protocol 2026-07-28 with no session; lists
and calls tools, mints a counter handle, continues it, checks that a bogus
handle is a tool error, then continues the handle from a second client pinned
to the legacy `initialize` handshake.

Prints one JSON line; exits non-zero listing every failed check.
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
        minted = await client.call_tool("counter", {"by": 3})
        handle = (minted.structured_content or {}).get("counter_id")
        calls = [minted]
        for args in ({"counter_id": handle}, {"by": 2, "counter_id": handle}):
            calls.append(await client.call_tool("counter", args))
        bogus = await client.call_tool("counter", {"counter_id": "no-such-counter"})
    await http.aclose()
    # The same handle, continued from a 2025 session.
    async with Client(url, mode="legacy") as legacy:
        legacy_protocol = legacy.protocol_version
        calls.append(await legacy.call_tool("counter", {"counter_id": handle}))
    return protocol, seen.get("id"), tools, echo, handle, calls, bogus, legacy_protocol


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


def structured(result):
    found = getattr(result, "structuredContent", None)
    if found is None:  # 2.x renamed the field
        found = getattr(result, "structured_content", None)
    return found or {}


async def main_v1(url):
    protocol, session_id, tools, echo, first, second = await run_v1(url)
    counters = [structured(first).get("counter"), structured(second).get("counter")]
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
    return report, problems


async def main_v2(url):
    protocol, session_id, tools, echo, handle, calls, bogus, legacy_protocol = await run_v2(url)
    counters = [structured(c).get("counter") for c in calls]
    report = {
        "sdk": f"mcp {version('mcp')}",
        "protocol": protocol,
        "session": session_id,
        "tools": tools,
        "echo": echo,
        "counter_id": handle,
        "counters": counters,
        "bogus": text_of(bogus),
        "legacy_protocol": legacy_protocol,
    }
    problems = []
    if protocol != "2026-07-28":
        problems.append(f"negotiated {protocol!r}, expected 2026-07-28")
    if session_id:
        problems.append(f"modern connection got session id {session_id}")
    if not {"echo", "counter", "slow"} <= set(tools):
        problems.append(f"tools {tools}")
    if echo != "hello from python":
        problems.append(f"echo {echo!r}")
    if not isinstance(handle, str) or not handle:
        problems.append(f"counter minted no counter_id: {structured(calls[0])}")
    if counters != [3, 4, 6, 7]:
        problems.append(f"counter handle did not keep state (modern x3, then legacy): {counters}")
    if any(structured(c).get("counter_id") != handle for c in calls[1:3]):
        problems.append("counter_id changed between modern calls")
    if not bogus.is_error:
        problems.append(f"bogus counter_id was not a tool error: {text_of(bogus)!r}")
    if legacy_protocol not in ("2025-11-25", "2025-06-18", "2025-03-26"):
        problems.append(f"legacy client negotiated {legacy_protocol!r}")
    return report, problems


async def main(url):
    report, problems = await (main_v1(url) if MAJOR == 1 else main_v2(url))
    print(json.dumps(report))
    if problems:
        print("FAIL: " + "; ".join(problems), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
