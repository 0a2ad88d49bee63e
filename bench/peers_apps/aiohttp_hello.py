"""aiohttp hello world for bench/peers.py: one process, access log off, on 127.0.0.1.

Usage: python aiohttp_hello.py PORT [asyncio|uvloop]
"""

import asyncio
import sys

from aiohttp import web


async def text(request: web.Request) -> web.Response:
    return web.Response(text="Hello, World!")


def main(port: int, loop: str) -> None:
    if loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    app = web.Application()
    app.router.add_get("/text", text)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "asyncio")
