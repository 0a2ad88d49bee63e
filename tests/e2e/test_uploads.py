"""Mongrel2's async uploads through a real Mongrel2: big and chunked bodies arrive as files."""

from __future__ import annotations

import hashlib
import os

import httpx
import pytest

from brubeck import Brubeck, WebMessageHandler


class Digest(WebMessageHandler):
    """Answers with the SHA-256 and size of whatever body arrived, inline or spooled."""

    def accept_upload(self) -> bool:
        return self.request.headers.get("x-refuse") is None

    def post(self) -> dict:
        upload = self.request.upload
        if upload is None:
            data = self.request.body
            return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "file": False}
        digest = hashlib.sha256()
        with upload.open() as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
        return {"sha256": digest.hexdigest(), "size": upload.size, "file": True}


@pytest.fixture(scope="module")
def site(serve_module):
    app = Brubeck(handler_tuples=[(r"^/digest$", Digest)])
    return serve_module(app)


def spooled_files(m2) -> list[str]:
    return sorted(os.listdir(m2.upload_dir)) if m2.upload_dir.exists() else []


def test_a_5_mb_upload_arrives_intact_and_is_deleted(site):
    data = os.urandom(5 * 1024 * 1024)
    response = httpx.post(f"{site.url}/digest", content=data, timeout=30)
    assert response.status_code == 200
    assert response.json() == {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "file": True,
    }
    assert spooled_files(site) == []


def test_a_small_body_stays_inline(site):
    response = httpx.post(f"{site.url}/digest", content=b"hello")
    assert response.json()["file"] is False and response.json()["size"] == 5


def test_a_chunked_body_always_takes_the_upload_path(site):
    def chunks():
        yield b"hel"
        yield b"lo"

    response = httpx.post(f"{site.url}/digest", content=chunks())
    assert response.json() == {
        "sha256": hashlib.sha256(b"hello").hexdigest(),
        "size": 5,
        "file": True,
    }
    assert spooled_files(site) == []


def test_a_refused_upload_is_answered_at_start_and_removed(site, wait_for):
    data = b"x" * 200_000
    response = httpx.post(f"{site.url}/digest", content=data, headers={"X-Refuse": "1"})
    assert response.status_code == 413
    wait_for(lambda: spooled_files(site) == [], timeout=5)  # Mongrel2 unlinks it on the close


class Form(WebMessageHandler):
    def post(self) -> dict:
        picture = self.get_file("picture")
        return {
            "title": self.get_argument("title"),
            "filename": picture.filename,
            "sha256": hashlib.sha256(picture.body).hexdigest(),
            "spooled": self.request.upload is not None,
        }


def test_a_big_multipart_form_is_parsed_from_the_spooled_file(serve):
    m2 = serve(Brubeck(handler_tuples=[(r"^/form$", Form)]))
    picture = os.urandom(300_000)  # over Mongrel2's inline limit: it arrives as a file
    response = httpx.post(
        f"{m2.url}/form",
        data={"title": "cat"},
        files={"picture": ("cat.png", picture, "image/png")},
        timeout=30,
    )
    assert response.json() == {
        "title": "cat",
        "filename": "cat.png",
        "spooled": True,
        "sha256": hashlib.sha256(picture).hexdigest(),
    }
    assert spooled_files(m2) == []


def test_a_spooled_body_over_max_body_size_is_a_413_when_read(serve):
    m2 = serve(Brubeck(handler_tuples=[(r"^/form$", Form)], max_body_size=100_000))
    response = httpx.post(
        f"{m2.url}/form",
        data={"title": "cat"},
        files={"picture": ("cat.png", os.urandom(300_000))},
        timeout=30,
    )
    assert response.status_code == 413
    assert spooled_files(m2) == []
