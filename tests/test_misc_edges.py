"""Error and edge branches of the smaller modules: bad settings, misbehaving peers, odd input.

Each test drives a branch the rest of the suite never reaches, through the public API, and
checks the clear error (exception text, HTTP status, log line) a user is owed there.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from brubeck import Brubeck, WebMessageHandler
from brubeck.logs import JSONFormatter, PlainFormatter, setup_logging
from brubeck.mongrel2 import Mongrel2Config, Mongrel2Process, free_port
from brubeck.security import check_password, hash_password
from brubeck.services import JobQueue, JobWorker, ServiceWorker, mdp
from brubeck.services.payload import decode, encode
from brubeck.settings import SettingsError, from_environment
from brubeck.templating import load_mako_env
from brubeck.testing import TestClient, TestResponse
from tests import fixtures
from tests.services_support import eventually

ROOT = Path(__file__).resolve().parents[1]


# settings.py: what the environment may say


@pytest.mark.parametrize(
    ("text", "header"),
    [("off", None), ("", None), ("X-Trace-Id", "X-Trace-Id"), ("yes", "X-Request-Id")],
)
def test_the_request_id_header_variable(text: str, header: str | None) -> None:
    assert from_environment({"BRUBECK_REQUEST_ID_HEADER": text})["request_id_header"][1] == header


def test_an_unknown_event_loop_names_the_variable_and_the_choices() -> None:
    with pytest.raises(SettingsError, match=r"BRUBECK_EVENT_LOOP='trio'.*asyncio, uvloop or auto"):
        from_environment({"BRUBECK_EVENT_LOOP": "trio"})


# access.py and testing.py: a bad setting fails the start, and the sync client cleans up


def test_a_request_id_header_that_is_not_a_name_fails_the_start_and_stops_the_thread() -> None:
    """The error comes at entry, and the sync client's thread and sockets do not outlive it."""
    app = Brubeck(handler_tuples=[(r"^/$", Hello)], request_id_header=5)
    entered = False
    expected = "request_id_header must be a header name or True, got 5"
    with pytest.raises(ValueError, match=expected), TestClient(app):
        entered = True
    assert not entered and app.msg_conn is None
    assert not [t for t in threading.enumerate() if t.name == "brubeck-testclient"]


async def test_a_failing_startup_hook_fails_the_async_entry() -> None:
    app = Brubeck(handler_tuples=[(r"^/$", Hello)])

    @app.on_startup
    def broken() -> None:
        raise RuntimeError("no database")

    entered = False
    with pytest.raises(RuntimeError, match="no database"):
        async with TestClient(app):
            entered = True
    assert not entered and app.msg_conn is None


class Hello(WebMessageHandler):
    def get(self) -> str:
        return f"{self.request.method} {self.request.body!r}"

    put = patch = options = head = get


def test_the_sync_client_speaks_every_method_and_shares_cookies() -> None:
    app = Brubeck(handler_tuples=[(r"^/$", Hello)])
    with TestClient(app) as client:
        assert client.app is app
        client.cookies = {"a": "1"}
        assert client.client.cookies == {"a": "1"}
        assert client.put("/", data="text body").text == "PUT b'text body'"
        assert client.patch("/").text == "PATCH b''"
        assert client.options("/").text == "OPTIONS b''"
        head = client.head("/")
        assert head.status_code == 200 and head.content == b""
        assert repr(head) == "<TestResponse 200 0 bytes>"


async def test_the_async_client_patch_and_options() -> None:
    async with TestClient(Brubeck(handler_tuples=[(r"^/$", Hello)])) as client:
        assert (await client.patch("/", data="x")).text == "PATCH b'x'"
        assert (await client.options("/")).text == "OPTIONS b''"


# access.py and logs.py: a streamed answer in the access log


class Streamed(WebMessageHandler):
    async def get(self) -> None:
        self.write("part")
        await self.flush()


async def test_a_streamed_answer_is_logged_with_no_status_and_size(caplog) -> None:
    """Its status and size went out before the hook ran: "-" in text, null in JSON."""
    app = Brubeck(handler_tuples=[(r"^/s$", Streamed)], access_log=True)
    with caplog.at_level(logging.INFO, logger="brubeck.access"):
        async with TestClient(app) as client:
            assert (await client.get("/s")).status_code == 200
    (record,) = [r for r in caplog.records if r.name == "brubeck.access"]
    assert '"GET /s" - - ' in record.getMessage()
    out = json.loads(JSONFormatter().format(record))
    assert out["status"] is None and out["bytes"] is None and out["path"] == "/s"


def test_json_logs_carry_the_stack_and_plain_logs_honour_a_datefmt() -> None:
    record = logging.getLogger("t").makeRecord("t", logging.INFO, "f", 1, "m", (), None)
    record.stack_info = "Stack (most recent call last):\n  here"
    assert "here" in json.loads(JSONFormatter().format(record))["stack_info"]
    record.created = 0.0
    assert PlainFormatter().formatTime(record, "%Y") == "1970"


def test_setup_logging_replaces_the_root_handlers_and_opens_the_access_log() -> None:
    root, access = logging.getLogger(), logging.getLogger("brubeck.access")
    saved = root.handlers[:], root.level, access.level
    stream = io.StringIO()
    try:
        handler = setup_logging("warning", json_logs=True, access_log=True, stream=stream)
        assert root.handlers == [handler] and root.level == logging.WARNING
        assert access.level == logging.INFO
        logging.getLogger("brubeck.x").warning("careful")
        assert json.loads(stream.getvalue())["message"] == "careful"
        setup_logging("debug", stream=stream)
        assert access.level == logging.NOTSET
    finally:
        for h in root.handlers[:]:
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
        access.setLevel(saved[2])


def test_a_plain_script_logs_at_info_without_setting_up_logging() -> None:
    """``run_until_signal`` gives a script with no logging set up its INFO lines."""
    script = textwrap.dedent(
        """
        import logging
        from brubeck.loops import run_until_signal
        async def serve():
            logging.getLogger("app").info("serving")
        run_until_signal(serve, lambda: None)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert "INFO app: serving" in done.stderr


# uploads.py: refused at the start, missing at the end


def upload_app(tmp_path: Path, **routes: Any) -> Brubeck:
    return Brubeck(handler_tuples=list(routes.values()), mongrel2_run_dir=str(tmp_path))


async def test_an_upload_with_no_route_or_no_method_is_refused_at_its_start(tmp_path) -> None:
    class GetOnly(WebMessageHandler):
        def get(self) -> str:
            return "ok"

    for app, status in (
        (Brubeck(mongrel2_run_dir=str(tmp_path)), 404),
        (Brubeck(handler_tuples=[(r"^/upload$", GetOnly)], mongrel2_run_dir=str(tmp_path)), 405),
    ):
        async with TestClient(app) as client:
            await client.send_raw(fixtures.with_conn_id(fixtures.UPLOAD_START, 51))
            refused = TestResponse(await client.receive(51), closed=False)
            assert refused.status_code == status and await client.receive(51) == b""
            if status == 405:
                assert "GET" in refused.headers["allow"]


async def test_an_upload_whose_file_is_missing_is_a_500_that_says_where(tmp_path, caplog) -> None:
    """A wrong ``mongrel2_run_dir`` must be visible in the log, not a crash."""
    app = Brubeck(mongrel2_run_dir=str(tmp_path))

    @app.add_route(r"^/upload$", method="POST")
    def upload(application: Brubeck, request: Any) -> str:
        return "stored"

    async with TestClient(app) as client:
        await client.send_raw(fixtures.with_conn_id(fixtures.UPLOAD_DONE, 52))
        response = TestResponse(await client.receive(52), closed=False)
    assert response.status_code == 500
    assert "is mongrel2_run_dir right?" in caplog.text and str(tmp_path) in caplog.text


# security.py and templating.py


def test_a_stored_hash_of_another_scheme_never_matches() -> None:
    stored = hash_password("pw")
    assert check_password("pw", stored)
    assert not check_password("pw", "bcrypt" + stored[len("scrypt") :])


def test_a_missing_mako_says_what_to_install(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "mako.lookup", None)
    with pytest.raises(ImportError, match=r"Mako is not installed: pip install 'brubeck\[mako\]'"):
        load_mako_env(str(tmp_path))


# mongrel2.py: bad configuration and a Mongrel2 that misbehaves


def config(**overrides: Any) -> Mongrel2Config:
    options: dict[str, Any] = {
        "port": 1,
        "routes": {"/": "handler"},
        "send_spec": "tcp://127.0.0.1:1",
        "recv_spec": "tcp://127.0.0.1:2",
    }
    options.update(overrides)
    return Mongrel2Config(**options)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"host": 5}, "host must be a str, got int"),
        ({"routes": {"": "handler"}}, "route patterns must not be empty"),
    ],
)
def test_config_values_are_checked(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config(**overrides).validate()


def fake_bin(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize(
    "m2sh",
    [
        "false",  # exits 1
        "true",  # exits 0 and writes no database
        "EMPTY",  # exits 0 and writes a database without the server
    ],
)
def test_a_failed_config_load_is_an_error_that_names_the_file(tmp_path, m2sh: str) -> None:
    if m2sh == "EMPTY":
        m2sh = fake_bin(tmp_path, "m2sh", "open('config.sqlite', 'wb').close()\n")
    proc = Mongrel2Process(config(), tmp_path / "run", m2sh_bin=m2sh)
    with pytest.raises(RuntimeError, match=r"m2sh load failed for .*mongrel2\.conf"):
        proc.start()
    assert not proc.running


# A Mongrel2 that writes its pid file; LISTEN makes it accept on the port, DEAF ignores SIGINT.
FAKE_MONGREL2 = """
import os, signal, socket, sys, time
open("run/mongrel2.pid", "w").write(str(os.getpid()))
if {deaf}:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
if {listen}:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", {port}))
    s.listen()
time.sleep(60)
"""


def test_a_mongrel2_that_never_listens_times_out_and_is_stopped(tmp_path) -> None:
    port = free_port()
    fake = fake_bin(tmp_path, "mongrel2", FAKE_MONGREL2.format(deaf=False, listen=False, port=port))
    proc = Mongrel2Process(config(port=port), tmp_path / "run", mongrel2_bin=fake)
    with pytest.raises(TimeoutError, match=f"mongrel2 not ready on 127.0.0.1:{port} after 0.5s"):
        proc.start(timeout=0.5)
    assert not proc.running and not proc.pid_file.exists()


def test_a_mongrel2_deaf_to_sigint_is_killed_and_a_second_start_is_refused(tmp_path) -> None:
    port = free_port()
    fake = fake_bin(tmp_path, "mongrel2", FAKE_MONGREL2.format(deaf=True, listen=True, port=port))
    proc = Mongrel2Process(config(port=port), tmp_path / "run", mongrel2_bin=fake)
    proc.start(timeout=10)
    try:
        with pytest.raises(RuntimeError, match="was already started"):
            proc.start()
    finally:
        proc.stop(timeout=0.3)
    assert not proc.running and not proc.pid_file.exists()


# services: bad arguments, stop before serve, a misbehaving broker, bad job frames


@pytest.mark.parametrize(
    "make",
    [
        lambda: ServiceWorker("tcp://127.0.0.1:1", "s", print, heartbeat=0),
        lambda: ServiceWorker("tcp://127.0.0.1:1", "s", print, liveness=0),
        lambda: ServiceWorker("tcp://127.0.0.1:1", "s", print, concurrency=0),
        lambda: JobQueue("tcp://127.0.0.1:*", hwm=0),
        lambda: JobQueue("tcp://127.0.0.1:*", timeout=-1),
        lambda: JobWorker("tcp://127.0.0.1:1", print, concurrency=0),
    ],
)
def test_service_settings_are_checked(make: Any) -> None:
    with pytest.raises(ValueError, match="need"):
        make()


async def test_a_worker_without_a_handler_says_how_to_give_one() -> None:
    with pytest.raises(TypeError, match="JobWorker has no handler: pass handler="):
        await JobWorker("tcp://127.0.0.1:1").serve()
    with pytest.raises(NotImplementedError, match="no handler"):
        await JobWorker("tcp://127.0.0.1:1").handle(1)
    with pytest.raises(NotImplementedError, match="no handler"):
        await ServiceWorker("tcp://127.0.0.1:1", "s").handle(1)


@pytest.fixture
async def router() -> AsyncIterator[zmq.asyncio.Socket]:
    """A raw ROUTER where the broker should be, driven by hand."""
    sock = zmq.asyncio.Context.instance().socket(zmq.ROUTER)
    sock.linger = 0
    sock.bind("tcp://127.0.0.1:*")
    yield sock
    sock.close()


async def next_command(router: zmq.asyncio.Socket, wanted: bytes) -> tuple[bytes, list[bytes]]:
    """The next frames from a worker with command ``wanted``, skipping heartbeats."""
    async with asyncio.timeout(10):
        while True:
            identity, *frames = await router.recv_multipart()
            assert frames[:2] == [b"", mdp.WORKER]
            if frames[2] == wanted:
                return identity, frames[3:]


async def test_a_worker_stopped_before_it_serves_returns_without_registering(router) -> None:
    worker = ServiceWorker(router.getsockopt_string(zmq.LAST_ENDPOINT), "echo", str)
    worker.stop()
    async with asyncio.timeout(10):
        await worker.serve()
    assert await router.poll(200) == 0


async def test_a_worker_survives_a_broker_that_breaks_the_protocol(router, caplog) -> None:
    """Garbage, a second request while busy, and a body that is no payload: each is logged
    or answered with an error, and the request in progress still gets its reply."""
    release = asyncio.Event()

    async def handle(payload: Any) -> Any:
        await release.wait()
        return payload

    worker = ServiceWorker(router.getsockopt_string(zmq.LAST_ENDPOINT), "echo", handle)
    task = asyncio.get_running_loop().create_task(worker.serve())
    try:
        identity, _ = await next_command(router, mdp.READY)
        await router.send_multipart([identity, b"", mdp.WORKER, b"\x09"])
        await router.send_multipart(mdp.request_to_worker(identity, b"c1", encode("first")))
        await router.send_multipart(mdp.request_to_worker(identity, b"c2", encode("second")))
        await eventually(lambda: "not taken" in caplog.text, what="the busy warning")
        assert "dropped a malformed message from the broker" in caplog.text
        release.set()
        _, frames = await next_command(router, mdp.REPLY)
        assert frames[0] == b"c1" and decode(frames[2:]) == "first"
        await router.send_multipart(mdp.request_to_worker(identity, b"c3", [b"bogus", b"x"]))
        _, frames = await next_command(router, mdp.REPLY)
        assert frames[0] == b"c3" and frames[2] == b"error" and b"PayloadError" in frames[3]
    finally:
        worker.stop()
        async with asyncio.timeout(10):
            await task


async def test_a_silent_broker_makes_the_worker_abandon_its_request(router, caplog) -> None:
    cancelled = asyncio.Event()

    async def hang(payload: Any) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    address = router.getsockopt_string(zmq.LAST_ENDPOINT)
    worker = ServiceWorker(address, "slow", hang, heartbeat=0.1, liveness=3, reconnect=0.05)
    task = asyncio.get_running_loop().create_task(worker.serve())
    try:
        identity, _ = await next_command(router, mdp.READY)
        await router.send_multipart(mdp.request_to_worker(identity, b"c1", encode(1)))
        async with asyncio.timeout(10):
            await cancelled.wait()
        await next_command(router, mdp.READY)  # registered again
        assert "abandoned a request in progress" in caplog.text
    finally:
        worker.stop()
        async with asyncio.timeout(10):
            await task


async def test_job_worker_edges(caplog) -> None:
    """A frame set that is no payload is dropped with a log line; a job that outlives the
    shutdown timeout is cancelled and counted in the log; stop() before serve() returns."""
    early = JobWorker("tcp://127.0.0.1:*", print, bind=True)
    early.stop()
    async with asyncio.timeout(10):
        await early.serve()

    seen: list[Any] = []
    started = asyncio.Event()

    async def handle(payload: Any) -> None:
        seen.append(payload)
        if payload == "hang":
            started.set()
            await asyncio.sleep(60)

    # A foreign producer: a raw PUSH may send anything.
    push = zmq.asyncio.Context.instance().socket(zmq.PUSH)
    push.linger = 0
    push.bind("tcp://127.0.0.1:*")
    try:
        worker = JobWorker(push.getsockopt_string(zmq.LAST_ENDPOINT), handle, shutdown_timeout=0.1)
        task = asyncio.get_running_loop().create_task(worker.serve())
        await push.send_multipart([b"a", b"b", b"c"])
        await push.send_multipart(encode("hang"))
        async with asyncio.timeout(10):
            await started.wait()
        worker.stop()
        async with asyncio.timeout(10):
            await task
    finally:
        push.close()
    assert seen == ["hang"]
    assert "dropped a job that is not a payload" in caplog.text
    assert "cancelled 1 jobs still running" in caplog.text
