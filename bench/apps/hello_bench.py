"""The benchmark app: small fixed answers from sync and async handlers.

Each case exists twice, ``/...`` with a ``def`` handler and ``/async/...`` with an
``async def`` one that awaits nothing: Brubeck answers both inline, without a task (the
second after reading the function's bytecode once). ``/await/json`` awaits for real, so it
is an asyncio task per request: the benchmarks show what awaiting costs.
bench/bare_handler.py answers the same paths with the same bytes, which keeps the comparison
with the framework-free baseline fair.

    python -m brubeck run bench/apps/hello_bench.py:app --pull ADDR --pub ADDR
"""

import asyncio

from brubeck import Brubeck, JSONMessageHandler, Mongrel2Connection, WebMessageHandler

TEXT = "Hello, World!"
TEXT_TYPE = "text/plain; charset=utf-8"


class TextHandler(WebMessageHandler):
    content_type = TEXT_TYPE

    def get(self):
        self.set_body(TEXT)
        return self.render()


class AsyncTextHandler(WebMessageHandler):
    content_type = TEXT_TYPE

    async def get(self):
        self.set_body(TEXT)
        return self.render()


class JSONHandler(JSONMessageHandler):
    def get(self):
        self.add_to_payload("message", TEXT)
        return self.render()


class AsyncJSONHandler(JSONMessageHandler):
    async def get(self):
        self.add_to_payload("message", TEXT)
        return self.render()


class AwaitJSONHandler(JSONMessageHandler):
    async def get(self):
        await asyncio.sleep(0)  # really suspends: this one is an asyncio task
        self.add_to_payload("message", TEXT)
        return self.render()


class UserHandler(JSONMessageHandler):
    def get(self, user_id):
        self.add_to_payload("user", user_id)
        return self.render()


class AsyncUserHandler(JSONMessageHandler):
    async def get(self, user_id):
        self.add_to_payload("user", user_id)
        return self.render()


app = Brubeck(
    msg_conn=Mongrel2Connection("tcp://127.0.0.1:9999", "tcp://127.0.0.1:9998"),
    handler_tuples=[
        (r"^/text$", TextHandler),
        (r"^/json$", JSONHandler),
        (r"^/user/(?P<user_id>\d+)$", UserHandler),
        (r"^/async/text$", AsyncTextHandler),
        (r"^/async/json$", AsyncJSONHandler),
        (r"^/async/user/(?P<user_id>\d+)$", AsyncUserHandler),
        (r"^/await/json$", AwaitJSONHandler),
    ],
)

if __name__ == "__main__":
    app.run()
