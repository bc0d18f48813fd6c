"""Interop peer: an official Python SDK (mcp 1.x) server whose sessions expire
after one idle second, so our client can prove it recovers from a real
peer's 404.

Usage: python py_server.py PORT
"""

import sys

from mcp.server.fastmcp import FastMCP

server = FastMCP("py-peer", host="127.0.0.1", port=int(sys.argv[1]), session_idle_timeout=1.0)


@server.tool()
def echo(text: str) -> str:
    """Returns the text it is given."""
    return text


if __name__ == "__main__":
    server.run(transport="streamable-http")
