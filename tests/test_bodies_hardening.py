"""Request bodies under attack: multipart and url-encoded forms, spooled and streamed uploads.

Every malformed or oversized body must get a clear 4xx (never a 500 from the framework's own
code), and every file a body was written to must be gone once the request is over, whichever
way it ended. Tests whose docstring starts with "Was a bug." pin a defect found here.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from brubeck import Brubeck, WebMessageHandler
from brubeck.errors import HTTPError
from brubeck.multipart import encode_multipart, parse_boundary, parse_multipart
from brubeck.testing import TestClient, TestResponse
from tests import fixtures
from tests.upload_stream_support import (
    answer,
    credits,
    ctl,
    disconnect,
    first,
    piece,
    quick_cancel,  # noqa: F401 - an autouse fixture
)

B = b"XyZ"
CD = b'Content-Disposition: form-data; name="%s"'


# Helpers


class Echo(WebMessageHandler):
    """Answers with the form fields and a summary of the files it parsed."""

    def post(self) -> dict[str, Any]:
        files = {
            name: [[f.filename, f.content_type, f.body.decode("latin-1")] for f in items]
            for name, items in self.request.files.items()
        }
        return {"form": self.request.form, "files": files}


def echo_app(**settings: Any) -> Brubeck:
    return Brubeck(handler_tuples=[(r"^/echo$", Echo)], **settings)


async def post_raw(
    app: Brubeck, body: bytes, content_type: str = f"multipart/form-data; boundary={B.decode()}"
) -> TestResponse:
    async with TestClient(app) as client:
        return await client.post("/echo", data=body, headers={"content-type": content_type})


def part(name: bytes, value: bytes, extra: bytes = b"") -> bytes:
    return b"--" + B + b"\r\n" + (CD % name) + extra + b"\r\n\r\n" + value + b"\r\n"


def body_of(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--" + B + b"--\r\n"


def parse(body: bytes, **limits: int) -> tuple[dict[str, Any], dict[str, Any]]:
    return parse_multipart(
        body,
        B,
        max_parts=limits.get("max_parts", 1000),
        max_fields_size=limits.get("max_fields_size", 1 << 20),
    )


def status_of(body: bytes, **limits: int) -> int:
    try:
        parse(body, **limits)
    except HTTPError as exc:
        return exc.status
    return 200


# Boundaries


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ('multipart/form-data; boundary="a b"', b"a b"),
        ("multipart/form-data; boundary=a'()+_,-./:=?z", b"a'()+_,-./:=?z"),
        ('multipart/form-data; BOUNDARY="MiXeD"', b"MiXeD"),
        ("multipart/form-data; boundary=" + "x" * 70, b"x" * 70),
        ("multipart/form-data; charset=utf-8; boundary=b;", b"b"),
    ],
)
def test_valid_boundaries_are_taken_verbatim(content_type: str, expected: bytes) -> None:
    """Quoted, special-character, 70-character and trailing-';' boundaries keep their case."""
    assert parse_boundary(content_type) == expected


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",
        "multipart/form-data; boundary=",
        'multipart/form-data; boundary=""',
        "multipart/form-data; boundary=" + "x" * 71,
        'multipart/form-data; boundary="ends with space "',
        'multipart/form-data; boundary="semi;colon"',
        'multipart/form-data; boundary="caf\u00e9"',
        "multipart/form-data; boundary=a; boundary=b",
        'multipart/form-data; boundary="unterminated',
        "multipart/form-data; charset=utf-8, boundary=b",
    ],
)
async def test_bad_boundaries_are_400s_through_the_app(content_type: str) -> None:
    """A missing, empty, too long, non-ASCII or repeated boundary is a 400, not a 500."""
    response = await post_raw(echo_app(), body_of(part(b"a", b"1")), content_type)
    assert response.status_code == 400
    assert "boundary" in response.text or "parameter" in response.text


async def test_a_boundary_with_special_characters_round_trips() -> None:
    """A boundary full of RFC 2046's special characters splits the body correctly."""
    boundary = "(a'+_,-./:=?) z"
    body, _ = encode_multipart({"f": ["1", "2"]}, boundary=boundary)
    response = await post_raw(echo_app(), body, f'multipart/form-data; boundary="{boundary}"')
    assert response.status_code == 200
    assert response.json()["form"] == {"f": ["1", "2"]}


# Structure


def test_preamble_and_epilogue_are_ignored_even_when_they_look_like_parts() -> None:
    """What precedes the first boundary and follows the closing one is never parsed as a part."""
    epilogue = b"\r\n" + part(b"late", b"never") + b"--" + B + b"--\r\n"
    body = b"a preamble naming --XyZ mid-line\r\n" + body_of(part(b"a", b"1")) + epilogue
    assert parse(body) == ({"a": ["1"]}, {})


def test_the_boundary_inside_content_but_not_at_a_line_start_is_content() -> None:
    """``--XyZ`` in the middle of a line, or after a bare LF, belongs to the value."""
    value = b"x --XyZ y\n--XyZ--\r-XyZ"
    assert parse(body_of(part(b"a", value))) == ({"a": [value.decode()]}, {})


@pytest.mark.parametrize(
    "body",
    [
        part(b"a", b"1") + b"--XyZ",  # closing line without its "--"
        part(b"a", b"1"),  # no closing line at all
        b"--XyZ\r\n" + CD % b"a" + b"\r\n\r\nhalf a val",  # cut mid-part
        part(b"a", b"1").replace(b"\r\n", b"\n") + b"--XyZ--\n",  # LF line ends
        part(b"a", b"1") + b"--XyZz\r\n" + b"--XyZ--",  # the boundary as a line prefix
        b"--XyZ\r\nContent-Type: text/plain\r\n\r\nv\r\n--XyZ--",  # no Content-Disposition
        b"--XyZ\r\n" + CD % b"a" + b"\r\n--XyZ--",  # no blank line after the headers
        b"--XyZ\r\n" + b"Content-Disposition: attachment; name=a\r\n\r\nv\r\n--XyZ--",
        b"--XyZ\r\n" + b'Content-Disposition: form-data; filename="f"\r\n\r\nv\r\n--XyZ--',
        b"no boundary anywhere",
        b"",
    ],
)
def test_malformed_structure_is_a_400(body: bytes) -> None:
    """Truncated bodies, LF-only lines, missing headers or names: 400, never parsed partly."""
    assert status_of(body) == 400


async def test_a_malformed_body_through_the_app_names_the_problem() -> None:
    """The client is told what is wrong with its body."""
    response = await post_raw(echo_app(), part(b"a", b"1"))
    assert response.status_code == 400
    assert "closing line" in response.text


def test_empty_parts_are_kept() -> None:
    """An empty field and an empty file with an empty filename both arrive."""
    body = body_of(part(b"a", b""), part(b"f", b"", b'; filename=""'))
    fields, files = parse(body)
    assert fields == {"a": [""]}
    [empty] = files["f"]
    assert (empty.filename, empty.body, empty.content_type) == ("", b"", "application/octet-stream")


def test_duplicate_fields_and_files_keep_every_value_in_order() -> None:
    """A repeated name collects all its values, files and fields apart."""
    body = body_of(
        part(b"a", b"1"),
        part(b"f", b"one", b'; filename="1.txt"'),
        part(b"a", b"2"),
        part(b"f", b"two", b'; filename="2.txt"'),
    )
    fields, files = parse(body)
    assert fields == {"a": ["1", "2"]}
    assert [(f.filename, f.body) for f in files["f"]] == [("1.txt", b"one"), ("2.txt", b"two")]


def test_repeated_part_headers_or_parameters_are_400s() -> None:
    """Two Content-Types in a part, or two names in one disposition, are ambiguous: 400."""
    twice = b"--XyZ\r\n" + CD % b"a" + b"\r\nContent-Type: a/b\r\ncontent-type: c/d\r\n\r\nv\r\n"
    assert status_of(twice + b"--XyZ--") == 400
    names = part(b"a", b"v", b'; name="b"')
    assert status_of(body_of(names)) == 400


# Filenames


@pytest.mark.parametrize(
    ("extra", "filename"),
    [
        (b'; filename="../../etc/passwd"', "../../etc/passwd"),
        (b'; filename="C:\\Users\\me\\a.txt"', "C:\\Users\\me\\a.txt"),
        (b"; filename*=UTF-8''..%2F..%2Fx%00.txt", "../../x\x00.txt"),
        (b"; filename*=UTF-8''%E2%82%AC.txt", "\u20ac.txt"),
        (b"; filename*=iso-8859-1'fr'%E9t%E9.txt", "\u00e9t\u00e9.txt"),
        (b"; filename=\"plain.txt\"; filename*=UTF-8''wins.txt", "wins.txt"),
        (b'; filename="a%22b%0D%0Ac"', 'a"b\r\nc'),
    ],
)
def test_filenames_are_decoded_but_never_trusted_as_paths(extra: bytes, filename: str) -> None:
    """The client's filename, path parts and all, arrives as sent (documented: sanitise it)."""
    [upload] = parse(body_of(part(b"f", b"data", extra)))[1]["f"]
    assert upload.filename == filename and upload.body == b"data"


@pytest.mark.parametrize(
    "extra",
    [
        b'; filename="caf\xe9.txt"',  # raw Latin-1, not UTF-8
        b"; filename*=UTF-8''%FF.txt",  # percent-encoded invalid UTF-8
        b"; filename*=koi8-r''x.txt",  # a charset RFC 8187 does not require
        b"; filename*=no-quotes-at-all",
    ],
)
async def test_undecodable_filenames_are_400s(extra: bytes) -> None:
    """A filename that is not UTF-8 (or not a valid RFC 8187 value) is a 400 naming it."""
    response = await post_raw(echo_app(), body_of(part(b"f", b"data", extra)))
    assert response.status_code == 400
    assert "malformed multipart/form-data body" in response.text


async def test_a_field_that_is_not_utf8_is_a_400() -> None:
    """Field values are text: invalid UTF-8 is refused, while a file may hold any bytes."""
    bad = await post_raw(echo_app(), body_of(part(b"a", b"\xff\xfe")))
    assert bad.status_code == 400 and "not valid UTF-8" in bad.text
    good = await post_raw(echo_app(), body_of(part(b"f", b"\xff\xfe", b'; filename="x"')))
    assert good.status_code == 200
    assert good.json()["files"] == {"f": [["x", "application/octet-stream", "\u00ff\u00fe"]]}


# Limits, at and around them


@pytest.mark.parametrize(("limit", "status"), [(3, 200), (2, 413)])
def test_max_form_parts_counts_files_too(limit: int, status: int) -> None:
    """Three parts (two fields, one file) fit a limit of 3, not of 2."""
    body = body_of(part(b"a", b"1"), part(b"b", b"2"), part(b"f", b"x", b'; filename="f"'))
    assert status_of(body, max_parts=limit) == status


@pytest.mark.parametrize(("limit", "status"), [(6, 200), (5, 413)])
def test_max_form_fields_size_counts_field_values_only(limit: int, status: int) -> None:
    """Fields of 3 + 3 bytes fit a limit of 6 whatever the file's size; 5 is a 413."""
    big_file = part(b"f", b"z" * 1000, b'; filename="f"')
    body = body_of(part(b"a", b"abc"), big_file, part(b"b", b"def"))
    assert status_of(body, max_fields_size=limit) == status


async def test_max_body_size_exactly_at_and_one_past_the_limit() -> None:
    """A multipart body of exactly ``max_body_size`` bytes is parsed; one byte more is a 413."""
    body = body_of(part(b"a", b"v"))
    at = await post_raw(echo_app(max_body_size=len(body)), body)
    over = await post_raw(echo_app(max_body_size=len(body) - 1), body)
    assert at.status_code == 200 and at.json()["form"] == {"a": ["v"]}
    assert over.status_code == 413 and "max_body_size" in over.text


async def test_a_zero_part_limit_still_accepts_an_empty_form() -> None:
    """``max_form_parts=0`` refuses any part but not a form that has none."""
    empty = await post_raw(echo_app(max_form_parts=0), b"--XyZ--\r\n")
    one = await post_raw(echo_app(max_form_parts=0), body_of(part(b"a", b"1")))
    assert empty.status_code == 200 and empty.json()["form"] == {}
    assert one.status_code == 413 and "max_form_parts" in one.text


# URL-encoded forms


async def post_form(app: Brubeck, body: bytes) -> TestResponse:
    return await post_raw(app, body, "application/x-www-form-urlencoded")


@pytest.mark.parametrize(("body", "limit"), [(b"a=1&b=2", 2), (b"a=1", 1)])
async def test_url_encoded_forms_at_max_form_parts_are_parsed(body: bytes, limit: int) -> None:
    """As many pairs as ``max_form_parts`` allows are parsed."""
    response = await post_form(echo_app(max_form_parts=limit), body)
    assert response.status_code == 200


async def test_url_encoded_form_one_pair_over_max_form_parts_is_a_413() -> None:
    """One pair past the limit is a 413 naming the setting."""
    response = await post_form(echo_app(max_form_parts=2), b"a=1&b=2&c=3")
    assert response.status_code == 413 and "max_form_parts" in response.text


async def test_a_trailing_ampersand_is_not_counted_as_a_field() -> None:
    """Was a bug. ``a=1&`` holds one pair (parse_qs drops the empty one), yet with
    ``max_form_parts=1`` it was a 413 "more than 1 fields": ``request.py`` counts ``&``
    separators, not the pairs it then parses."""
    response = await post_form(echo_app(max_form_parts=1), b"a=1&")
    assert response.status_code == 200
    assert response.json()["form"] == {"a": ["1"]}


@pytest.mark.parametrize("body", [b"a=%FF", b"a=\xff", b"%C3=1"])
async def test_url_encoded_invalid_utf8_is_a_400(body: bytes) -> None:
    """Raw or percent-encoded invalid UTF-8 in a url-encoded form is a 400."""
    response = await post_form(echo_app(), body)
    assert response.status_code == 400 and "UTF-8" in response.text


async def test_url_encoded_max_form_fields_size_at_and_past_the_limit() -> None:
    """The whole url-encoded body counts: exactly the limit passes, one byte more is a 413."""
    body = b"a=12345"
    at = await post_form(echo_app(max_form_fields_size=len(body)), body)
    over = await post_form(echo_app(max_form_fields_size=len(body) - 1), body)
    assert at.status_code == 200
    assert over.status_code == 413 and "max_form_fields_size" in over.text


# Spooled uploads (upload.stream=0): Mongrel2 wrote the body to a file


class Stored(WebMessageHandler):
    """Parses a spooled form (``x-do: form``), raises (``x-do: raise``), waits (``x-do:
    wait``), or moves the file and describes it (``x-do: save``)."""

    async def post(self) -> Any:
        upload = self.request.upload
        action = self.request.headers.get("x-do", "")
        if action == "raise":
            raise RuntimeError("the handler's own bug")
        if action == "wait":
            await asyncio.sleep(30)
        if action == "save":
            moved = upload.save_as(self.settings["save_to"])
            return {"size": upload.size, "read": upload.read().decode(), "moved": str(moved)}
        if action == "partial":
            return {"first": len(await self.request.body_stream.read())}
        return {"form": self.request.form, "size": upload.size}


def spooled_file(run_dir: Path, data: bytes, name: str = "upload.A") -> Path:
    path = run_dir / "tmp" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return path


def notice(
    client: TestClient,
    conn_id: int,
    path: str,
    size: int,
    *,
    done: str | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    """A Mongrel2 upload notice: start only, or start and ``done``."""
    all_headers = {"content-length": str(size), "x-mongrel2-upload-start": path, **(headers or {})}
    if done is not None:
        all_headers["x-mongrel2-upload-done"] = done
    return client.build_message("POST", "/store", conn_id=conn_id, headers=all_headers)


def stored_app(run_dir: Path, **settings: Any) -> Brubeck:
    return Brubeck(
        handler_tuples=[(r"^/store$", Stored)], mongrel2_run_dir=str(run_dir), **settings
    )


replies = fixtures.drain  # everything the app sent to a connection within ``wait`` seconds


async def test_a_forged_upload_done_header_does_not_get_two_answers(tmp_path: Path) -> None:
    """Was a bug. Mongrel2 passes a client's own ``X-Mongrel2-Upload-Done`` header through on
    the start notice (it replaces it only on the real done notice: seen with Mongrel2 1.12),
    so the start notice looked like a done one with disagreeing paths. It was answered 400
    without a close; Mongrel2 read on, and the real done notice was answered as well: two
    responses to one request on a keep-alive connection. The start must either stay silent or
    be refused with a close (which makes Mongrel2 abort and delete the file)."""
    spooled_file(tmp_path, b"")
    async with TestClient(stored_app(tmp_path)) as client:
        forged = notice(client, 7, "/tmp/upload.A", 100_000, done="/tmp/anything")
        await client.send_raw(forged)
        sent = await replies(client, 7)
    responses = [reply for reply in sent if reply]
    assert not responses or (len(responses) == 1 and sent[-1] == b""), sent


async def test_a_malformed_spooled_form_is_a_400_and_its_file_is_deleted(tmp_path: Path) -> None:
    """A multipart body spooled to a file is parsed from it; malformed, it is a 400 and the
    file goes."""
    path = spooled_file(tmp_path, part(b"a", b"1"))  # no closing line
    async with TestClient(stored_app(tmp_path)) as client:
        raw = notice(
            client,
            8,
            "/tmp/upload.A",
            path.stat().st_size,
            done="/tmp/upload.A",
            headers={"content-type": "multipart/form-data; boundary=XyZ"},
        )
        await client.send_raw(raw)
        response = TestResponse(await client.receive(8), closed=False)
    assert response.status_code == 400 and "closing line" in response.text
    assert not path.exists()


async def test_a_spooled_form_is_parsed_and_its_file_deleted(tmp_path: Path) -> None:
    """A well-formed spooled multipart form parses like an inline one; the file goes after."""
    data = body_of(part(b"a", b"1"), part(b"a", b"2"))
    path = spooled_file(tmp_path, data)
    async with TestClient(stored_app(tmp_path)) as client:
        raw = notice(
            client,
            9,
            "/tmp/upload.A",
            len(data),
            done="/tmp/upload.A",
            headers={"content-type": "multipart/form-data; boundary=XyZ"},
        )
        await client.send_raw(raw)
        response = TestResponse(await client.receive(9), closed=False)
    assert response.json() == {"form": {"a": ["1", "2"]}, "size": len(data)}
    assert not path.exists()


async def test_a_handler_that_raises_still_gets_its_upload_deleted(tmp_path: Path) -> None:
    """The handler's own exception is its 500; the spooled file is deleted all the same."""
    path = spooled_file(tmp_path, b"data")
    async with TestClient(stored_app(tmp_path)) as client:
        raw = notice(
            client, 10, "/tmp/upload.A", 4, done="/tmp/upload.A", headers={"x-do": "raise"}
        )
        await client.send_raw(raw)
        response = TestResponse(await client.receive(10), closed=False)
    assert response.status_code == 500
    assert not path.exists()


async def test_a_client_gone_while_the_handler_runs_leaves_no_file(tmp_path: Path) -> None:
    """The client disconnects while the handler awaits: the task ends, the file goes."""
    path = spooled_file(tmp_path, b"data")
    async with TestClient(stored_app(tmp_path)) as client:
        raw = notice(client, 11, "/tmp/upload.A", 4, done="/tmp/upload.A", headers={"x-do": "wait"})
        await client.send_raw(raw)
        await asyncio.sleep(0.05)
        assert path.exists()  # the handler holds it
        await client.send_raw(disconnect(client, 11))
        for _ in range(100):
            if not path.exists():
                break
            await asyncio.sleep(0.01)
    assert not path.exists()


@pytest.mark.parametrize("done", ["/../outside", "/tmp/../../outside", "/"])
async def test_a_done_path_leaving_the_run_dir_is_a_400_with_a_log_line(
    tmp_path: Path, done: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A reported path outside ``mongrel2_run_dir`` is refused, logged, and never touched."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    outside = tmp_path / "outside"
    outside.write_bytes(b"secret")
    async with TestClient(stored_app(run_dir)) as client:
        await client.send_raw(notice(client, 12, done, 6, done=done))
        response = TestResponse(await client.receive(12), closed=False)
    assert response.status_code == 400 and "secret" not in response.text
    assert "refused an upload path" in caplog.text
    assert outside.read_bytes() == b"secret"


async def test_a_missing_spooled_file_is_logged_with_the_likely_cause(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A done notice for a file that is not there is the server's fault (a wrong run dir):
    a 500 with a log line that says what to check, no crash."""
    with caplog.at_level(logging.ERROR, logger="brubeck.app"):
        async with TestClient(stored_app(tmp_path)) as client:
            await client.send_raw(notice(client, 13, "/tmp/gone", 5, done="/tmp/gone"))
            response = TestResponse(await client.receive(13), closed=False)
    assert response.status_code == 500
    assert "mongrel2_run_dir" in caplog.text


async def test_an_upload_moved_with_save_as_is_still_described_by_the_upload(
    tmp_path: Path,
) -> None:
    """Was a bug. ``Upload.save_as`` moved the file but left ``upload.path`` on the old
    location, so ``upload.size``, ``upload.read()`` (and ``request.body``) raised
    FileNotFoundError afterwards: a 500 from the framework for a documented call sequence.
    ``uploads.py`` ``save_as`` should set ``self.path = target``."""
    spooled_file(tmp_path, b"hello")
    save_to = tmp_path / "kept.bin"
    async with TestClient(stored_app(tmp_path, save_to=str(save_to))) as client:
        raw = notice(client, 14, "/tmp/upload.A", 5, done="/tmp/upload.A", headers={"x-do": "save"})
        await client.send_raw(raw)
        response = TestResponse(await client.receive(14), closed=False)
    assert response.status_code == 200, response.text
    assert response.json() == {"size": 5, "read": "hello", "moved": str(save_to)}
    assert save_to.read_bytes() == b"hello"


def open_fds_to(path: Path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        count += target.startswith(str(path))
    return count


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
async def test_a_body_stream_left_unread_does_not_keep_the_spooled_file_open(
    tmp_path: Path,
) -> None:
    """Was a bug. ``request.body_stream`` over a spooled upload opens the file on the first
    read and closes it only when a read hits the end. A handler that reads one piece and
    answers left the file open after the response (deleted, so its disk space is not freed
    until the garbage collector closes it, with a ResourceWarning). The app should close the
    stream's file when it discards the upload (``bodystream.py`` ``_read_file``; ``app.respond``
    / ``Upload.discard``)."""
    path = spooled_file(tmp_path, b"x" * 200_000)
    kept: list[Any] = []

    class Partial(WebMessageHandler):
        async def post(self) -> dict[str, int]:
            stream = self.request.body_stream
            kept.append(stream)  # e.g. held by a log record or a metrics hook
            return {"first": len(await stream.read())}

    app = Brubeck(handler_tuples=[(r"^/store$", Partial)], mongrel2_run_dir=str(tmp_path))
    async with TestClient(app) as client:
        raw = notice(client, 15, "/tmp/upload.A", 200_000, done="/tmp/upload.A")
        await client.send_raw(raw)
        response = TestResponse(await client.receive(15), closed=False)
        still_open = open_fds_to(tmp_path / "tmp")
    for stream in kept:  # close it here, so that a failure is this assert, not a warning
        if stream._file is not None:
            stream._file.close()
    assert response.json() == {"first": 65536}
    assert not path.exists()
    assert still_open == 0


# Streamed uploads (upload.stream=1): the body comes in pieces


class Digest(WebMessageHandler):
    def post(self) -> dict[str, Any]:
        return {"body": self.request.body.decode()}


def streamed_app(upload_dir: Path, **settings: Any) -> Brubeck:
    return Brubeck(handler_tuples=[(r"^/up$", Digest)], upload_dir=str(upload_dir), **settings)


def spooled_by_app(directory: Path) -> list[Path]:
    return sorted(directory.glob("brubeck-upload.*"))


async def ends_with_an_error(client: TestClient, conn_id: int, status: int) -> None:
    """The upload ended early with ``status``, and a cancel follows the answer."""
    response = await answer(client, conn_id)
    assert response.status_code == status, response.text
    assert await ctl(client, conn_id) == {b"cancel": True}


async def test_a_streamed_body_longer_than_its_content_length_is_refused(tmp_path: Path) -> None:
    """Was a bug. With ``Content-Length: 5``, pieces adding up to 8 bytes were all written and
    the handler got an 8-byte body under a 5-byte Content-Length; only ``max_upload_size``
    was checked (``streamed_uploads.py`` ``_write``). A piece past the declared length should
    end the upload with a 400, as a piece out of order does, and the file go."""
    async with TestClient(streamed_app(tmp_path)) as client:
        await client.send_raw(first(client, 21, b"abc", length=5))
        await credits(client, 21)
        await client.send_raw(piece(client, 21, 3, b"defgh", done=True))
        await ends_with_an_error(client, 21, 400)
    assert spooled_by_app(tmp_path) == []


async def test_a_streamed_body_that_ends_short_of_its_content_length_is_refused(
    tmp_path: Path,
) -> None:
    """Was a bug. A done piece at byte 4 of a declared 10 was taken as the whole body: the
    handler answered 200 for a body that silently lost 6 bytes (``streamed_uploads.py``
    ``_take`` accepts ``UPLOAD_STREAM_DONE`` without comparing ``received`` with the
    Content-Length). It should be a 400 and the file deleted."""
    async with TestClient(streamed_app(tmp_path)) as client:
        await client.send_raw(first(client, 22, b"abc", length=10))
        await credits(client, 22)
        await client.send_raw(piece(client, 22, 3, b"d", done=True))
        await ends_with_an_error(client, 22, 400)
    assert spooled_by_app(tmp_path) == []


async def test_a_gap_never_filled_then_a_disconnect_leaves_no_file(tmp_path: Path) -> None:
    """A piece held early (its predecessor missing) and then the client leaving: the held
    piece and the file are dropped, nothing is answered."""
    async with TestClient(streamed_app(tmp_path, upload_stream_window=64)) as client:
        await client.send_raw(first(client, 23, b"abc", length=20))
        await credits(client, 23)
        await client.send_raw(piece(client, 23, 10, b"later"))  # 3..10 never comes
        await asyncio.sleep(0.02)
        assert len(spooled_by_app(tmp_path)) == 1
        await client.send_raw(disconnect(client, 23))
        await asyncio.sleep(0.02)
        assert await replies(client, 23, 0.1) == []
    assert spooled_by_app(tmp_path) == []


@pytest.mark.parametrize("offset", [b"-3", b"+3", b" 3", b"3.0", b"0x3", b""])
async def test_a_piece_with_a_malformed_offset_is_a_400(tmp_path: Path, offset: bytes) -> None:
    """An offset that is not plain digits ends the upload with a 400 and deletes the file."""
    async with TestClient(streamed_app(tmp_path)) as client:
        await client.send_raw(first(client, 24, b"abc", length=10))
        await credits(client, 24)
        await client.send_raw(piece(client, 24, offset, b"defg"))
        await ends_with_an_error(client, 24, 400)
    assert spooled_by_app(tmp_path) == []


class StopsReading(WebMessageHandler):
    """Reads one piece of a live body, then answers."""

    stream_request_body = True

    async def post(self) -> dict[str, int]:
        return {"first": len(await self.request.body_stream.read())}


async def test_a_live_handler_that_stops_reading_ends_the_connection(tmp_path: Path) -> None:
    """A ``stream_request_body`` handler that answers after one piece: the answer goes out,
    then a cancel, and later pieces are dropped without another word."""
    app = Brubeck(handler_tuples=[(r"^/up$", StopsReading)], upload_stream_window=8)
    async with TestClient(app) as client:
        await client.send_raw(first(client, 25, b"abc", length=100))
        sent = [await client.receive(25) for _ in range(2)]
        await asyncio.sleep(0.05)
        sent += await replies(client, 25, 0.1)
        await client.send_raw(piece(client, 25, 3, b"defg"))
        late = await replies(client, 25, 0.1)
    answers = [TestResponse(raw, closed=False) for raw in sent if raw.startswith(b"HTTP/")]
    assert [r.json() for r in answers] == [{"first": 3}]
    assert [b"cancel" in raw for raw in sent if not raw.startswith(b"HTTP/")].count(True) == 1
    assert late == []
