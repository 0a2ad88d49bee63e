"""The examples as a new user runs them, behind a real Mongrel2: do they do what they say?"""

from __future__ import annotations

import hashlib
import os
import runpy
from pathlib import Path

import httpx
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str):
    return runpy.run_path(str(EXAMPLES / name / "app.py"))["app"]


@pytest.fixture(scope="module")
def forms(serve_module):
    return serve_module(load("forms"))


@pytest.fixture(scope="module")
def assets(serve_module):
    return serve_module(load("assets"))


def test_forms_page_states_the_size_the_app_really_reads(forms):
    """Was a bug. examples/forms serves a page saying Mongrel2 "sends bodies up to its
    limits.content_length (20480 bytes by default) inline; this example reads only those",
    and its 400 says "choose a file (one under Mongrel2's limits.content_length)". But a file
    over that limit, which Mongrel2 spools to disk, is read and hashed like any other: the
    real limit is the app's max_body_size (1 MiB). The page and the message should say so.
    """
    data = os.urandom(30_000)
    with httpx.Client(base_url=forms.url, timeout=5) as http:
        answer = http.post("/", files={"file": ("big.bin", data)})
        page = http.get("/").text
    assert answer.status_code == 200, answer.text
    assert hashlib.sha256(data).hexdigest() in answer.text
    assert "reads only those" not in page


def test_assets_text_files_go_gzipped_as_the_example_says(assets):
    """Was a bug. examples/assets/README.md ("small text files are gzipped for clients that
    accept it") and app.py (`compress_response=True  # small text files go gzipped`) promise
    gzip, but every text file of the example (site.css 105 bytes, site.js 128, index.html
    159) is under `compress_min_size` (1024), so none is ever gzipped: a user trying
    `curl --compressed` sees no Content-Encoding. Either the files or the claim must change.
    """
    paths = ["/static/css/site.css", "/static/js/site.js", "/guide/"]
    with httpx.Client(base_url=assets.url, timeout=5) as http:
        encodings = {
            path: http.get(path, headers={"Accept-Encoding": "gzip"}).headers.get(
                "content-encoding"
            )
            for path in paths
        }
    assert "gzip" in encodings.values(), encodings
