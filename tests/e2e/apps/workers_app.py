"""An app for the supervisor's end-to-end tests: which process answered, and slow requests.

``brubeck run`` gives it its addresses (``--pull``/``--pub``). ``/slow`` appends the worker's
pid to the file named by ``$ARRIVALS`` when a request arrives, so a test knows when every
request it sent is being handled.
"""

import asyncio
import os

from brubeck import Brubeck, WebMessageHandler


class Pid(WebMessageHandler):
    def get(self) -> str:
        return str(os.getpid())


class Slow(WebMessageHandler):
    async def get(self) -> str:
        arrivals = os.environ.get("ARRIVALS")
        if arrivals:
            with open(arrivals, "a") as out:
                out.write(f"{os.getpid()}\n")
        await asyncio.sleep(float(self.get_argument("s", "1")))
        return f"slept in {os.getpid()}"


class Boom(WebMessageHandler):
    def get(self) -> str:
        raise RuntimeError("boom")


app = Brubeck(handler_tuples=[(r"^/pid$", Pid), (r"^/slow$", Slow), (r"^/boom$", Boom)])
