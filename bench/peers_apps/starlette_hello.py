"""Starlette hello world served by uvicorn, for bench/peers.py: one process, access log off.

uvicorn uses httptools for HTTP parsing when it is installed (bench/peers.py installs it).

Usage: python starlette_hello.py PORT [asyncio|uvloop]
"""

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def text(request: Request) -> PlainTextResponse:
    return PlainTextResponse("Hello, World!")


app = Starlette(routes=[Route("/text", text)])


def main(port: int, loop: str) -> None:
    uvicorn.run(app, host="127.0.0.1", port=port, loop=loop, access_log=False, log_level="warning")


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "asyncio")
