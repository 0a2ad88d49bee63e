"""Forms through a real Mongrel2: url-encoded, multipart with files, JSON, and the body limits.

One app serves the module, with small limits so that bodies over them still fit in Mongrel2's
inline ``limits.content_length`` (20480 bytes): larger bodies would arrive as upload files.
"""

import hashlib
import json
import runpy
from pathlib import Path

import httpx
import pytest

from brubeck import Brubeck, JSONMessageHandler

MAX_BODY_SIZE = 4096
MAX_FORM_PARTS = 5


class FormHandler(JSONMessageHandler):
    def post(self):
        self.application.state.calls += 1
        return {
            "form": self.request.form,
            "name": self.get_argument("name"),
            "tags": self.get_arguments("tag"),
            "files": {
                name: [
                    {
                        "filename": f.filename,
                        "type": f.content_type,
                        "size": f.size,
                        "sha256": hashlib.sha256(f.body).hexdigest(),
                    }
                    for f in uploads
                ]
                for name, uploads in self.request.files.items()
            },
        }


class JSONBodyHandler(JSONMessageHandler):
    def post(self):
        return {"got": self.request.json}


@pytest.fixture(scope="module")
def app():
    app = Brubeck(
        handler_tuples=[(r"^/form$", FormHandler), (r"^/json$", JSONBodyHandler)],
        max_body_size=MAX_BODY_SIZE,
        max_form_parts=MAX_FORM_PARTS,
    )
    app.state.calls = 0
    return app


@pytest.fixture(scope="module")
def client(serve_module, app):
    m2 = serve_module(app)
    with httpx.Client(base_url=m2.url, timeout=10) as client:
        yield client


def error_message(response: httpx.Response) -> str:
    return response.json()["error"]["message"]


def test_url_encoded_form(client):
    response = client.post("/form?tag=q", data={"name": "Zoë & co", "tag": ["a", "b"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["form"] == {"name": ["Zoë & co"], "tag": ["a", "b"]}
    assert (body["name"], body["tags"], body["files"]) == ("Zoë & co", ["q", "a", "b"], {})


def test_multipart_form_with_two_files(client):
    text = "line one\r\n--boundary-looking line\r\nline three ☕\n".encode()
    binary = bytes(range(256)) * 4 + b"\r\n\r\n--\r\n"
    response = client.post(
        "/form",
        data={"name": "Ann", "tag": ["x", "y"]},
        files=[
            ("doc", ('notes "draft".txt', text, "text/plain; charset=utf-8")),
            ("doc", ("données.bin", binary, "application/octet-stream")),
        ],
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["form"] == {"name": ["Ann"], "tag": ["x", "y"]}
    assert (body["name"], body["tags"]) == ("Ann", ["x", "y"])
    assert body["files"] == {
        "doc": [
            {
                "filename": 'notes "draft".txt',
                "type": "text/plain; charset=utf-8",
                "size": len(text),
                "sha256": hashlib.sha256(text).hexdigest(),
            },
            {
                "filename": "données.bin",
                "type": "application/octet-stream",
                "size": len(binary),
                "sha256": hashlib.sha256(binary).hexdigest(),
            },
        ]
    }


def test_json_body(client):
    response = client.post("/json", json={"a": [1, 2.5, None], "é": "ü"})
    assert response.status_code == 200
    assert response.json() == {"got": {"a": [1, 2.5, None], "é": "ü"}}


def test_malformed_json_is_a_400(client):
    response = client.post(
        "/json", content=b'{"a": [1, 2', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "malformed JSON" in error_message(response)


def test_a_body_over_max_body_size_is_a_413_before_the_handler(client, app):
    calls = app.state.calls
    size = MAX_BODY_SIZE + 904
    response = client.post("/form", data={"name": "x" * (size - len("name="))})
    assert response.status_code == 413
    # Refused before routing, so the page is the app's error_handler's (HTML), not the route's.
    assert f"Content-Length {size}" in response.text and "max_body_size" in response.text
    assert app.state.calls == calls
    # The connection is still usable afterwards.
    assert client.post("/form", data={"name": "ok"}).status_code == 200


def test_more_parts_than_max_form_parts_is_a_413(client):
    fields = {f"f{i}": str(i) for i in range(MAX_FORM_PARTS)}
    response = client.post("/form", data={"name": "n", **fields}, files={"doc": b"x"})
    assert response.status_code == 413
    assert f"more than {MAX_FORM_PARTS} parts" in error_message(response)
    response = client.post("/form", data={"name": "n", **fields})  # url-encoded: 6 fields
    assert response.status_code == 413
    assert "max_form_parts" in error_message(response)


def test_a_missing_required_argument_is_a_400_naming_it(client):
    response = client.post("/form", files={"doc": ("a.txt", b"a")})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert json.loads(response.content)["error"] == {
        "status": 400,
        "reason": "Bad Request",
        "message": "missing argument 'name'",
    }


def test_the_forms_example(serve):
    path = Path(__file__).resolve().parents[2] / "examples" / "forms" / "app.py"
    m2 = serve(runpy.run_path(str(path))["app"])
    data = bytes(range(256)) * 40
    with httpx.Client(base_url=m2.url, timeout=10) as client:
        page = client.get("/")
        assert 'enctype="multipart/form-data"' in page.text
        response = client.post("/", data={"note": "<hi>"}, files={"file": ("r&d.bin", data, "x/y")})
        assert response.status_code == 200, response.text
        for text in ("r&amp;d.bin", f"{len(data)} bytes", hashlib.sha256(data).hexdigest()):
            assert text in response.text
        assert "&lt;hi&gt;" in response.text
        response = client.post("/", data={"note": "no file"})
        assert response.status_code == 400
        assert "choose a file" in response.text
