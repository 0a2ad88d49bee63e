"""Test an app without a Mongrel2: a client that plays Mongrel2's side of the wire.

The client sends the same bytes Mongrel2 sends (tnetstring headers, upper-case Mongrel2 keys,
lower-case client keys) over in-process ZeroMQ sockets, and parses the HTTP the app answers.
End-to-end behaviour through the real server is for tests against a real Mongrel2.

``async with TestClient(app)`` runs the app in the test's own event loop; ``with
TestClient(app)`` runs it in a background thread with its own loop, for plain sync tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import threading
import uuid
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import tnetstring
import ujson
import zmq
import zmq.asyncio

from .app import Brubeck
from .connection import Mongrel2Connection
from .multipart import FileSpec, encode_multipart
from .request import parse_cookies

if TYPE_CHECKING:
    from .wstesting import TestWebSocket

_ids = itertools.count(1)


class _Control(bytes):
    """A control message (``X`` reply) in a connection's inbox: ``receive`` returns it,
    ``receive_reply`` passes over it."""


#: Mongrel2 keeps the first five values of a header sent more often (``MAX_DUPE_HEADERS``).
MAX_REPEATED_HEADER = 5

#: What a client leaves as it is in a path and in a query (RFC 3986); the rest is encoded.
_PATH_SAFE = "/:@!$&'()*+,;=%~"
_QUERY_SAFE = _PATH_SAFE + "?"


def _request_target(url: str) -> tuple[str, str]:
    """Path and query as an HTTP client sends them: no fragment, no scheme or host, and
    percent-encoded where a request line cannot carry a character (Mongrel2 answers 400)."""
    if "://" in url:
        url = urlsplit(url)._replace(scheme="", netloc="").geturl()
    url = url.partition("#")[0]
    if not url.startswith("/"):
        raise ValueError(f"a request path starts with '/', got {url!r}")
    path, _, query = url.partition("?")
    return quote(path, safe=_PATH_SAFE), quote(query, safe=_QUERY_SAFE)


def _no_none(fields: dict[str, Any]) -> dict[str, Any]:
    """``None`` is an empty value, as httpx sends it (not the text "None")."""
    return {
        name: ["" if v is None else v for v in value]
        if isinstance(value, (list, tuple))
        else ("" if value is None else value)
        for name, value in fields.items()
    }


_T = TypeVar("_T")


class TestResponse:
    """An HTTP response as the client received it."""

    __test__ = False  # not a pytest test class

    def __init__(self, raw: bytes, closed: bool) -> None:
        self.raw = raw
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        version, status, *reason = lines[0].split(" ", 2)
        self.http_version = version
        self.status_code = int(status)
        self.reason = reason[0] if reason else ""
        self.header_list: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.header_list.append((name.strip(), value.strip()))
        self.headers = {name.lower(): value for name, value in self.header_list}
        self.content = body
        #: True when the app closed the connection after this response.
        self.closed = closed

    def get_all(self, name: str) -> list[str]:
        return [v for n, v in self.header_list if n.lower() == name.lower()]

    @property
    def text(self) -> str:
        return self.content.decode("utf-8")

    def json(self) -> Any:
        return ujson.loads(self.content)

    def __repr__(self) -> str:
        return f"<TestResponse {self.status_code} {len(self.content)} bytes>"


class TestClient:
    """Drive an app through its real receive loop.

    ``async with TestClient(app) as client`` in async tests; ``with TestClient(app) as client``
    in sync ones, where ``client`` is a ``SyncTestClient`` whose methods return responses.
    """

    __test__ = False

    def __init__(self, app: Brubeck, host: str = "testserver", timeout: float = 5.0) -> None:
        self.app = app
        self.host = host
        self.timeout = timeout
        self.sender = str(uuid.uuid4()).encode()
        self.cookies: dict[str, str] = {}
        name = f"brubeck-test-{next(_ids)}"
        self._pull_addr = f"inproc://{name}-requests"
        self._pub_addr = f"inproc://{name}-replies"
        self._saved_conn = app.msg_conn
        self._ctx = zmq.asyncio.Context.instance()
        self._push: zmq.asyncio.Socket | None = None
        self._sub: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._conn_ids = itertools.count(1)
        self._inbox: dict[bytes, list[bytes]] = {}
        #: Mongrel2 control messages the app sent (``[b"ctl", {b"keep-alive": True}]``), by
        #: connection id: Mongrel2 acts on them, a client never sees them.
        self.controls: dict[bytes, list[Any]] = {}
        # One reader at a time files every reply under its id, so concurrent requests each
        # find theirs, whoever read it.
        self._reading = asyncio.Lock()
        self._sync: SyncTestClient | None = None

    async def __aenter__(self) -> TestClient:
        self._push = self._ctx.socket(zmq.PUSH)
        self._push.setsockopt(zmq.LINGER, 0)
        self._push.bind(self._pull_addr)
        self._sub = self._ctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.LINGER, 0)
        self._sub.bind(self._pub_addr)
        self._sub.subscribe(b"")
        self.app.msg_conn = Mongrel2Connection(self._pull_addr, self._pub_addr, context=self._ctx)
        self._task = asyncio.get_running_loop().create_task(self.app.serve())
        # Let serve() start, so that an exit before any request can stop it, and so that a
        # start that fails at once (a bad setting, a failing startup hook) fails the entry.
        await asyncio.sleep(0)
        task = self._task
        failure = task.exception() if task.done() and not task.cancelled() else None
        if failure is not None:
            self._task = None
            self._close_sockets()
            raise failure
        return self

    def __enter__(self) -> SyncTestClient:
        self._sync = SyncTestClient(self)
        self._sync.start()
        return self._sync

    def __exit__(self, *exc: Any) -> None:
        sync, self._sync = self._sync, None
        if sync is not None:
            sync.close()

    async def __aexit__(self, *exc: Any) -> None:
        self.app.stop()
        try:
            if self._task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(self._task, self.timeout)
        finally:
            self._close_sockets()

    def _close_sockets(self) -> None:
        """Close the fake Mongrel2's sockets and give the app its connection back."""
        for sock in (self._push, self._sub):
            if sock is not None:
                sock.close()
        self._push = self._sub = None
        self.app.msg_conn = self._saved_conn

    def build_message(
        self,
        method: str,
        path: str,
        *,
        conn_id: int,
        query: str = "",
        headers: dict[str, str | list[str]] | None = None,
        body: bytes = b"",
        version: str = "HTTP/1.1",
    ) -> bytes:
        """The bytes Mongrel2 would send for this request (tnetstring protocol).

        The path and query go out as given, so a test can send what a real client could not
        (raw UTF-8, quotes); ``request()`` percent-encodes them as clients do. Headers go as
        Latin-1.
        """
        if any(char.isspace() for char in path + query):
            # No HTTP request line carries one; here it would split the message itself.
            raise ValueError(f"percent-encode the whitespace in {path + query!r} (%20 for a space)")
        m2: dict[bytes, Any] = {
            b"PATH": path.encode(),
            b"METHOD": method.encode(),
            b"VERSION": version.encode(),
            b"URI": (path + ("?" + query if query else "")).encode(),
            b"PATTERN": b"/",
            b"URL_SCHEME": b"http",
            b"REMOTE_ADDR": b"127.0.0.1",
        }
        if query:
            m2[b"QUERY"] = query.encode()
        client: dict[bytes, Any] = {b"host": self.host.encode()}
        if self.cookies:
            client[b"cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items()).encode()
        for name, value in (headers or {}).items():
            key = name.lower().encode("latin-1")
            if isinstance(value, list):
                # Mongrel2 passes a header sent once as a string, and keeps five of a repeated one
                values = [v.encode("latin-1") for v in value[:MAX_REPEATED_HEADER]]
                if len(values) == 1:
                    client[key] = values[0]
                elif values:
                    client[key] = values
            else:
                client[key] = value.encode("latin-1")
        if body and b"content-length" not in client:
            client[b"content-length"] = str(len(body)).encode()
        client[b"x-forwarded-for"] = b"127.0.0.1"
        all_headers = {**client, **m2}
        return b"%s %d %s %s%s" % (
            self.sender,
            conn_id,
            path.encode(),
            tnetstring.dumps(all_headers),
            tnetstring.dumps(body),
        )

    async def send_raw(self, raw: bytes) -> None:
        assert self._push is not None, "use the client inside 'async with'"
        self._check_serving()
        try:
            async with asyncio.timeout(self.timeout):
                await self._push.send(raw)
        except TimeoutError:
            self._check_serving()
            raise TimeoutError(f"the app took no message within {self.timeout}s") from None

    def _check_serving(self) -> None:
        """Raise what ended the app's ``serve()``, if it ended: nothing would answer."""
        task = self._task
        if task is not None and task.done():
            failure = None if task.cancelled() else task.exception()
            if failure is not None:
                raise RuntimeError(f"the app stopped serving: {failure!r}") from failure
            raise RuntimeError("the app stopped serving")

    async def receive_reply(self, conn_id: int) -> bytes:
        """The next message to ``conn_id`` that a client would see: control messages skipped."""
        while isinstance(data := await self.receive(conn_id), _Control):
            pass
        return data

    async def receive(self, conn_id: int) -> bytes:
        """The next message the app sent to ``conn_id``."""
        assert self._sub is not None, "use the client inside 'async with'"
        key = b"%d" % conn_id
        async with asyncio.timeout(self.timeout):
            while not self._inbox.get(key):
                async with self._reading:
                    if not self._inbox.get(key):
                        self._file(await self._sub.recv())
        return self._inbox[key].pop(0)

    async def _rest_of_body(self, conn_id: int, reply: bytes) -> bytes:
        """A body sent in pieces with a Content-Length (a large file) is read up to that length."""
        head, _, body = reply.partition(b"\r\n\r\n")
        match = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
        if match is None or head.startswith((b"HTTP/1.1 304", b"HTTP/1.1 204")):
            return reply
        missing = int(match.group(1)) - len(body)
        pieces = [reply]
        while missing > 0:
            piece = await self.receive_reply(conn_id)
            if not piece:  # closed before the end: the caller sees the short body
                self._inbox.setdefault(b"%d" % conn_id, []).insert(0, b"")
                break
            pieces.append(piece)
            missing -= len(piece)
        return b"".join(pieces)

    def _drain_ready(self) -> None:
        assert self._sub is not None
        sync: zmq.Socket[bytes] = zmq.Socket.shadow(self._sub.underlying)
        while True:
            try:
                raw = sync.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._file(raw)

    def _file(self, raw: bytes) -> None:
        _sender, _, rest = raw.partition(b" ")
        targets, _, data = rest.partition(b", ")
        ids = targets.partition(b":")[2].split(b" ")
        if ids[0] == b"X":  # a control reply (keep-alive, credits): for Mongrel2 only
            ids = ids[1:]
            data = _Control(data)
            for cid in ids:
                self.controls.setdefault(cid, []).append(tnetstring.loads(data))
        for cid in ids:
            self._inbox.setdefault(cid, []).append(data)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        headers: dict[str, str | list[str]] | None = None,
        data: dict[str, Any] | bytes | str | None = None,
        json: Any = None,
        files: dict[str, FileSpec | list[FileSpec]] | None = None,
        version: str = "HTTP/1.1",
    ) -> TestResponse:
        headers = dict(headers or {})
        body = b""
        if json is not None:
            body = ujson.dumps(json).encode()
            headers.setdefault("content-type", "application/json")
        elif files is not None:
            if not isinstance(data, dict | None):
                raise TypeError("with files=, data must be a dict of form fields")
            body, content_type = encode_multipart(data, files)
            headers.setdefault("content-type", content_type)
        elif isinstance(data, dict):
            body = urlencode(_no_none(data), doseq=True).encode()
            headers.setdefault("content-type", "application/x-www-form-urlencoded")
        elif isinstance(data, str):
            body = data.encode()
        elif data is not None:
            body = data
        path, query = _request_target(path)
        if params:
            query = "&".join(filter(None, [query, urlencode(_no_none(params), doseq=True)]))
        conn_id = next(self._conn_ids)
        raw = self.build_message(
            method.upper(),
            path,
            conn_id=conn_id,
            query=query,
            headers=headers,
            body=body,
            version=version,
        )
        await self.send_raw(raw)
        reply = await self.receive_reply(conn_id)
        if method.upper() != "HEAD":
            reply = await self._rest_of_body(conn_id, reply)
        # The app sends the close right after the reply, so it is already queued if it exists.
        self._drain_ready()
        pending = self._inbox.get(b"%d" % conn_id) or []
        after = next((i for i, m in enumerate(pending) if not isinstance(m, _Control)), None)
        closed = after is not None and pending[after] == b""
        if closed and after is not None:
            del pending[after]
        response = TestResponse(reply, closed)
        for header in response.get_all("set-cookie"):
            pair = header.split(";", 1)[0]
            self.cookies.update(parse_cookies(pair))
        return response

    async def get(self, path: str, **kw: Any) -> TestResponse:
        return await self.request("GET", path, **kw)

    async def head(self, path: str, **kw: Any) -> TestResponse:
        return await self.request("HEAD", path, **kw)

    async def post(self, path: str, **kw: Any) -> TestResponse:
        return await self.request("POST", path, **kw)

    async def put(self, path: str, **kw: Any) -> TestResponse:
        return await self.request("PUT", path, **kw)

    async def patch(self, path: str, **kw: Any) -> TestResponse:
        return await self.request("PATCH", path, **kw)

    async def delete(self, path: str, **kw: Any) -> TestResponse:
        return await self.request("DELETE", path, **kw)

    async def options(self, path: str, **kw: Any) -> TestResponse:
        return await self.request("OPTIONS", path, **kw)

    async def websocket_connect(
        self,
        path: str,
        *,
        subprotocols: list[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> TestWebSocket:
        """Open a WebSocket the way Mongrel2 passes one on (see ``brubeck.wstesting``)."""
        from .wstesting import TestWebSocket

        return await TestWebSocket.connect(self, path, subprotocols, headers)


class SyncTestClient:
    """A ``TestClient`` for sync tests: the app and the client run in a background thread.

    Made by ``with TestClient(app) as client``. Each call runs the matching ``TestClient``
    coroutine on that thread's event loop and waits for its result, so startup and shutdown
    hooks, async handlers and timeouts behave as with the async client.
    """

    __test__ = False

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # The async client's state, shared: cookies set here are sent there.
    @property
    def app(self) -> Brubeck:
        return self.client.app

    @property
    def cookies(self) -> dict[str, str]:
        return self.client.cookies

    @cookies.setter
    def cookies(self, value: dict[str, str]) -> None:
        self.client.cookies = value

    def start(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="brubeck-testclient", daemon=True)
        self._thread.start()
        ready.wait()
        try:
            self._call(self.client.__aenter__())
        except BaseException:
            self._stop_loop()
            raise

    def close(self) -> None:
        try:
            self._call(self.client.__aexit__(None, None, None))
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(self.client.timeout + 5)
        if not thread.is_alive():
            loop.close()
        self._loop = self._thread = None

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("use the client inside 'with TestClient(app) as client'")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        # The client's own timeout applies inside; this one only guards against a stuck loop.
        return future.result(self.client.timeout + 5)

    def build_message(self, method: str, path: str, **kw: Any) -> bytes:
        return self.client.build_message(method, path, **kw)

    def send_raw(self, raw: bytes) -> None:
        self._call(self.client.send_raw(raw))

    def receive(self, conn_id: int) -> bytes:
        return self._call(self.client.receive(conn_id))

    def request(self, method: str, path: str, **kw: Any) -> TestResponse:
        """``TestClient.request`` with the same arguments, waited for."""
        return self._call(self.client.request(method, path, **kw))

    def get(self, path: str, **kw: Any) -> TestResponse:
        return self.request("GET", path, **kw)

    def head(self, path: str, **kw: Any) -> TestResponse:
        return self.request("HEAD", path, **kw)

    def post(self, path: str, **kw: Any) -> TestResponse:
        return self.request("POST", path, **kw)

    def put(self, path: str, **kw: Any) -> TestResponse:
        return self.request("PUT", path, **kw)

    def patch(self, path: str, **kw: Any) -> TestResponse:
        return self.request("PATCH", path, **kw)

    def delete(self, path: str, **kw: Any) -> TestResponse:
        return self.request("DELETE", path, **kw)

    def options(self, path: str, **kw: Any) -> TestResponse:
        return self.request("OPTIONS", path, **kw)
