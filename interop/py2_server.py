"""Interop peer: an official Python SDK 2.x (mcp 2.3) server, for our
client in the 2026-07-28 era. Tools: `echo {text}`, `add {a, b}`, and
`greet`, whose `name` is asked of the user (elicitation through an
`input_required` result in 2026-07-28).

Usage: python py2_server.py PORT
"""

import sys
from typing import Annotated

from pydantic import BaseModel

from mcp.server.mcpserver import Elicit, MCPServer, Resolve

server = MCPServer("py2-peer")


class Name(BaseModel):
    name: str


def ask_name() -> Elicit[Name]:
    return Elicit("Your name?", Name)


@server.tool()
def echo(text: str) -> str:
    """Returns the text it is given."""
    return text


@server.tool()
def add(a: int, b: int) -> str:
    """Adds two integers."""
    return f"{a + b}"


@server.tool()
def greet(who: Annotated[Name, Resolve(ask_name)]) -> str:
    """Greets the user, whose name it asks."""
    return f"Hello, {who.name}!"


if __name__ == "__main__":
    server.run(transport="streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
