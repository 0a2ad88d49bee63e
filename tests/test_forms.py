"""Forms through the handler API: get_argument, get_file and the app's body limits (TestClient)."""

from __future__ import annotations

import hashlib

import pytest

from brubeck import Brubeck, JSONMessageHandler, UploadedFile, WebMessageHandler
from brubeck.request import BodyLimits
from brubeck.testing import TestClient


class FormHandler(JSONMessageHandler):
    def post(self) -> dict:
        self.application.state.calls += 1
        upload = self.get_file("doc")
        return {
            "name": self.get_argument("name"),
            "tags": self.get_arguments("tag"),
            "raw": self.get_argument("raw", strip=False, default=None),
            "doc": None
            if upload is None
            else {
                "filename": upload.filename,
                "type": upload.content_type,
                "size": upload.size,
                "sha256": hashlib.sha256(upload.body).hexdigest(),
            },
            "files": {k: [f.filename for f in v] for k, v in self.request.files.items()},
        }


class JSONBodyHandler(JSONMessageHandler):
    def post(self) -> dict:
        return {"got": self.request.json}


def make_app(**settings: object) -> Brubeck:
    app = Brubeck(
        handler_tuples=[(r"^/form$", FormHandler), (r"^/json$", JSONBodyHandler)], **settings
    )
    app.state.calls = 0
    return app


async def test_url_encoded_fields_reach_get_argument() -> None:
    async with TestClient(make_app()) as client:
        response = await client.post(
            "/form?tag=q", data={"name": " Ann ", "tag": ["a", "b"], "raw": " r "}
        )
    assert response.status_code == 200
    assert response.json() == {
        "name": "Ann",
        "tags": ["q", "a", "b"],
        "raw": " r ",
        "doc": None,
        "files": {},
    }


async def test_multipart_fields_and_files_reach_the_handler() -> None:
    pdf = b"%PDF-1.7\r\n--not-a-boundary\r\n" + bytes(range(256))
    async with TestClient(make_app()) as client:
        response = await client.post(
            "/form?tag=q",
            data={"name": "Zoë", "tag": ["a", "b"]},
            files={
                "doc": ("report 'v2' \"final\".pdf", pdf, "application/pdf"),
                "extra": [b"one", ("two.txt", b"two")],
            },
        )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "name": "Zoë",
        "tags": ["q", "a", "b"],
        "raw": None,
        "doc": {
            "filename": "report 'v2' \"final\".pdf",
            "type": "application/pdf",
            "size": len(pdf),
            "sha256": hashlib.sha256(pdf).hexdigest(),
        },
        "files": {"doc": ["report 'v2' \"final\".pdf"], "extra": ["extra", "two.txt"]},
    }


async def test_get_file_of_a_missing_or_non_file_field_is_none() -> None:
    class Probe(WebMessageHandler):
        def post(self) -> str:
            found = [self.get_file(n) for n in ("absent", "field", "f")]
            return repr([None if f is None else f.filename for f in found])

    app = Brubeck(handler_tuples=[(r"^/$", Probe)])
    async with TestClient(app) as client:
        response = await client.post("/", data={"field": "x"}, files={"f": ("f.txt", b"")})
        assert response.text == "[None, None, 'f.txt']"
        response = await client.post("/", data={"field": "x"})
        assert response.text == "[None, None, None]"


async def test_a_missing_argument_is_a_400_naming_it() -> None:
    async with TestClient(make_app()) as client:
        response = await client.post("/form", files={"doc": b"x"})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "missing argument 'name'"


async def test_malformed_multipart_and_json_are_400s() -> None:
    async with TestClient(make_app()) as client:
        response = await client.post(
            "/form",
            data=b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--",
            headers={"content-type": "multipart/form-data; boundary=b"},
        )
        assert response.status_code == 400
        assert "part 1 has no name" in response.json()["error"]["message"]
        response = await client.post(
            "/json", data=b'{"a": ', headers={"content-type": "application/json"}
        )
        assert response.status_code == 400
        assert "malformed JSON" in response.json()["error"]["message"]
        response = await client.post("/json", json={"a": [1, 2]})
        assert response.json() == {"got": {"a": [1, 2]}}


async def test_a_declared_body_over_max_body_size_is_refused_before_the_handler() -> None:
    app = make_app(max_body_size=100)
    async with TestClient(app) as client:
        response = await client.post("/form", data={"name": "x" * 200})
        assert response.status_code == 413
        assert "max_body_size" in response.text and "Content-Length 205" in response.text
        assert app.state.calls == 0
        # Even on a route that does not exist: the body is refused before routing.
        response = await client.post("/nowhere", data=b"x" * 101)
        assert response.status_code == 413
        response = await client.post("/form", data={"name": "x" * 95})
        assert response.status_code == 200
        assert app.state.calls == 1


async def test_a_body_over_max_body_size_is_a_413_when_read() -> None:
    app = make_app(settings={"max_body_size": 100})
    async with TestClient(app) as client:
        # A Content-Length that understates the body: the handler runs, reading it is refused.
        response = await client.post(
            "/form", data={"name": "x" * 200}, headers={"content-length": "10"}
        )
    assert response.status_code == 413
    assert "max_body_size" in response.json()["error"]["message"]
    assert app.state.calls == 1


async def test_form_limits_from_the_settings() -> None:
    app = make_app(max_form_parts=3, max_form_fields_size=10)
    async with TestClient(app) as client:
        response = await client.post("/form", data={"name": "n"}, files={"a": b"", "b": b""})
        assert response.status_code == 200
        response = await client.post("/form", data={"name": "n", "x": "1", "y": "2", "z": "3"})
        assert response.status_code == 413
        assert "max_form_parts" in response.json()["error"]["message"]
        response = await client.post("/form", data={"name": "n"}, files={"f": [b"", b"", b""]})
        assert response.status_code == 413
        response = await client.post("/form", data={"name": "n" * 11}, files={"f": b""})
        assert response.status_code == 413
        assert "max_form_fields_size" in response.json()["error"]["message"]


def test_the_app_reads_its_limits_from_the_settings_once() -> None:
    assert make_app().body_limits == BodyLimits()
    assert make_app(max_body_size=1, settings={"max_form_parts": 2}).body_limits == BodyLimits(
        max_body_size=1, max_form_parts=2
    )
    with pytest.raises(ValueError, match="max_body_size setting"):
        make_app(max_body_size="10MB")


async def test_testclient_files_need_a_dict_of_fields() -> None:
    async with TestClient(make_app()) as client:
        with pytest.raises(TypeError, match="data must be a dict"):
            await client.post("/form", data=b"raw", files={"f": b""})


def test_uploaded_file_is_exported() -> None:
    assert UploadedFile("a", "b", "c", b"d").size == 1
