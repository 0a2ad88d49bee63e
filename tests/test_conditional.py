"""conditional.py and the app's 304s: a client holding the current copy gets no body again."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from brubeck import Brubeck, HTTPError, JSONMessageHandler, Response, WebMessageHandler, render
from brubeck.conditional import (
    answer,
    body_etag,
    http_date,
    is_fresh,
    preconditions_hold,
    with_etag,
)
from brubeck.testing import TestClient, TestResponse

TAG = '"v7"'
MODIFIED = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
MODIFIED_TEXT = "Mon, 06 May 2024 07:08:09 GMT"
EARLIER_TEXT = "Mon, 06 May 2024 07:08:08 GMT"
LATER_TEXT = "Tue, 07 May 2024 07:08:09 GMT"

#: One object for every request, as some handlers do with a constant page.
SHARED = Response("shared page", headers={"Cache-Control": "no-cache"})


# Pure functions


def test_body_etag_is_a_quoted_128_bit_tag_that_follows_the_body() -> None:
    """Clients compare tags byte for byte, across processes: it must be stable and strong."""
    tag = body_etag(b"hello")
    assert re.fullmatch(r'"[0-9a-f]{32}"', tag)
    assert tag == body_etag(b"hel" + b"lo")
    assert tag == f'"{hashlib.sha256(b"hello").hexdigest()[:32]}"'  # as docs/http.md says
    assert tag != body_etag(b"hello!")
    assert body_etag(b"") != body_etag(b"\0")


def test_http_date_from_a_unix_time() -> None:
    assert http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert http_date(784111777.9) == "Sun, 06 Nov 1994 08:49:37 GMT"


def test_http_date_converts_an_aware_datetime_to_gmt() -> None:
    """An HTTP date is always GMT: a local time must be shifted, not relabelled."""
    paris = timezone(timedelta(hours=2))
    assert http_date(datetime(2024, 5, 6, 9, 8, 9, tzinfo=paris)) == MODIFIED_TEXT
    assert http_date(MODIFIED) == MODIFIED_TEXT


def test_http_date_refuses_a_naive_datetime() -> None:
    """A naive datetime has no instant: guessing its zone would shift every validator."""
    with pytest.raises(ValueError, match="aware datetime"):
        http_date(datetime(2024, 5, 6, 7, 8, 9))


@pytest.mark.parametrize(
    ("headers", "etag", "last_modified", "fresh"),
    [
        pytest.param({b"if-none-match": b'"v7"'}, TAG, None, True, id="exact-tag"),
        pytest.param({b"if-none-match": b'W/"v7"'}, TAG, None, True, id="weak-client-tag"),
        pytest.param({b"if-none-match": b'"v7"'}, 'W/"v7"', None, True, id="weak-server-tag"),
        pytest.param({b"if-none-match": b'"a" ,  "v7",  "b"'}, TAG, None, True, id="tag-list"),
        pytest.param({b"if-none-match": b" * "}, TAG, None, True, id="star"),
        pytest.param({b"if-none-match": b"*"}, None, MODIFIED_TEXT, True, id="star-no-tag"),
        pytest.param({b"if-none-match": b'"v6", "v8"'}, TAG, None, False, id="no-match"),
        pytest.param({b"if-none-match": b'"v7"'}, None, MODIFIED_TEXT, False, id="no-etag"),
        pytest.param(
            {b"if-none-match": b'"v6"', b"if-modified-since": MODIFIED_TEXT.encode()},
            TAG,
            MODIFIED_TEXT,
            False,
            id="tag-beats-matching-date",
        ),
        pytest.param(
            {b"if-none-match": b'"v7"', b"if-modified-since": EARLIER_TEXT.encode()},
            TAG,
            MODIFIED_TEXT,
            True,
            id="tag-beats-stale-date",
        ),
        pytest.param(
            {b"if-modified-since": MODIFIED_TEXT.encode()}, TAG, MODIFIED_TEXT, True, id="date-eq"
        ),
        pytest.param(
            {b"if-modified-since": LATER_TEXT.encode()}, None, MODIFIED_TEXT, True, id="date-later"
        ),
        pytest.param(
            {b"if-modified-since": EARLIER_TEXT.encode()}, None, MODIFIED_TEXT, False, id="earlier"
        ),
        pytest.param(
            {b"if-modified-since": b"Mon, 06 May 2024 09:08:09 +0200"},
            None,
            MODIFIED_TEXT,
            True,
            id="date-other-zone",
        ),
        pytest.param(
            {b"if-modified-since": b"yesterday"}, None, MODIFIED_TEXT, False, id="bad-ims"
        ),
        pytest.param(
            {b"if-modified-since": MODIFIED_TEXT.encode()}, None, "last week", False, id="bad-lm"
        ),
        pytest.param({}, TAG, MODIFIED_TEXT, False, id="no-conditions"),
        pytest.param(
            {b"if-none-match": [b'"v1"', b'W/"v7"']}, TAG, None, True, id="repeated-header"
        ),
        pytest.param({b"if-none-match": 7}, TAG, None, False, id="int-junk"),
        pytest.param({b"if-none-match": [1, 2]}, TAG, None, False, id="int-list-junk"),
        pytest.param({b"if-modified-since": 1715000000}, None, MODIFIED_TEXT, False, id="int-ims"),
    ],
)
def test_is_fresh(
    headers: dict[bytes, Any], etag: str | None, last_modified: str | None, fresh: bool
) -> None:
    assert is_fresh(headers, etag, last_modified) is fresh


def test_a_tag_with_a_comma_inside_its_quotes_still_matches() -> None:
    """RFC 9110 §8.8.3: etagc takes any visible character but DQUOTE, the comma included."""
    assert is_fresh({b"if-none-match": b'"a,b"'}, '"a,b"')
    assert is_fresh({b"if-none-match": b'"x", "a,b"'}, '"a,b"')


def test_answer_turns_only_a_200_to_get_or_head_into_a_304() -> None:
    """POST or an error is never 'not modified': the client must see the real answer."""
    headers = {b"if-none-match": TAG.encode()}
    ok = Response("body", headers={"ETag": TAG})
    assert answer(headers, "GET", ok).status == 304
    assert answer(headers, "HEAD", ok).status == 304
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert answer(headers, method, ok) is ok
    for status in (201, 203, 206, 404, 500):
        other = Response("body", status, headers={"ETag": TAG})
        assert answer(headers, "GET", other) is other
    assert answer(headers, "GET", Response("no validators")).status == 200
    # The 304 keeps every header (the encoder drops the representation's own), not the body.
    tagged = Response("body", headers={"ETag": TAG, "Cache-Control": "no-cache"}, reason="Fine")
    gone = answer(headers, "GET", tagged)
    assert (gone.status, gone.body, gone.reason) == (304, b"", None)
    assert gone.headers == tagged.headers and gone.headers is not tagged.headers


def test_with_etag_copies_and_only_for_a_200_to_get_or_head() -> None:
    """The handler's object may be shared between requests: it must come back untouched."""
    page = Response("page", headers={"X-A": "1"})
    tagged = with_etag("GET", page)
    assert tagged is not page and page.headers == [("X-A", "1")]
    assert tagged.headers == [("X-A", "1"), ("ETag", body_etag(b"page"))]
    assert with_etag("HEAD", page).headers == tagged.headers
    assert with_etag("POST", page) is page
    assert with_etag("GET", Response("made", 201)).headers == []
    own = Response("page", headers={"etag": TAG})
    assert with_etag("GET", own) is own


# Through the app


class Tagged(WebMessageHandler):
    """A page with its own tag and the headers a 304 must carry over."""

    def get(self) -> str:
        self.set_header("ETag", TAG)
        self.set_header("Cache-Control", "no-cache")
        self.set_header("Vary", "Accept-Language")
        self.set_cookie("seen", "1")
        return "the full page"

    def post(self) -> str:
        self.set_header("ETag", TAG)
        return "posted"

    def put(self) -> str:
        self.set_header("ETag", TAG)
        return "put"


class Dated(WebMessageHandler):
    def get(self) -> str:
        self.set_header("Last-Modified", MODIFIED)
        return "dated page"


class Plain(JSONMessageHandler):
    def get(self) -> dict[str, str]:
        return {"plain": "page"}

    def post(self) -> dict[str, str]:
        return {"plain": "posted"}


class OwnTag(WebMessageHandler):
    def get(self) -> str:
        self.set_header("ETag", 'W/"mine"')
        return "own tag"


class Created(WebMessageHandler):
    def get(self) -> str:
        self.set_header("ETag", TAG)
        self.set_status(201)
        return "created"


class Missing(WebMessageHandler):
    def get(self) -> Response:
        self.set_header("ETag", TAG)
        self.write("missing")
        return self.render(404)


class Raises(WebMessageHandler):
    def get(self) -> None:
        raise HTTPError(409, "conflict", headers={"ETag": TAG})


class Moves(WebMessageHandler):
    def get(self) -> Response:
        self.set_header("ETag", TAG)
        return self.redirect("/tagged")


class Shared(WebMessageHandler):
    def get(self) -> Response:
        return SHARED


class Cheap(WebMessageHandler):
    """Asks before building the page, and counts the pages it built."""

    built = 0

    def get(self) -> Response | str:
        self.set_header("ETag", TAG)
        if self.request.is_fresh(TAG):
            return self.render(304)
        type(self).built += 1
        return "built at great cost"

    def post(self) -> str:
        return "fresh" if self.request.is_fresh(TAG) else "stale"


class Probe(WebMessageHandler):
    """is_fresh with Last-Modified in each form a handler may hold it."""

    def get(self, kind: str) -> str:
        value = {"datetime": MODIFIED, "float": MODIFIED.timestamp(), "str": MODIFIED_TEXT}[kind]
        return "fresh" if self.request.is_fresh(last_modified=value) else "stale"


class Awaits(WebMessageHandler):
    async def get(self) -> str:
        await asyncio.sleep(0)
        self.set_header("ETag", TAG)
        return "awaited page"


def make_app(**settings: Any) -> Brubeck:
    app = Brubeck(
        handler_tuples=[
            (r"^/tagged$", Tagged),
            (r"^/dated$", Dated),
            (r"^/plain$", Plain),
            (r"^/own$", OwnTag),
            (r"^/created$", Created),
            (r"^/missing$", Missing),
            (r"^/raises$", Raises),
            (r"^/moves$", Moves),
            (r"^/shared$", Shared),
            (r"^/cheap$", Cheap),
            (r"^/probe/(\w+)$", Probe),
            (r"^/awaits$", Awaits),
        ],
        **settings,
    )

    @app.add_route(r"^/function$")
    def function_page(application: Brubeck, message: Any) -> Response:
        return render("function page", headers={"ETag": TAG, "Cache-Control": "no-cache"})

    return app


def matching(tag: str = TAG) -> dict[str, str]:
    return {"If-None-Match": tag}


def assert_not_modified(response: TestResponse) -> None:
    """A 304 as RFC 9110 §15.4.5 wants it: no body, none of the representation's metadata."""
    assert response.status_code == 304
    assert response.content == b""
    assert "content-type" not in response.headers
    assert "content-length" not in response.headers


async def test_a_matching_tag_gets_a_304_with_the_caching_headers() -> None:
    """The client refreshes its cache entry from the 304: these headers must survive."""
    async with TestClient(make_app()) as client:
        response = await client.get("/tagged", headers=matching())
    assert_not_modified(response)
    assert response.headers["etag"] == TAG
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["vary"] == "Accept-Language"
    assert response.get_all("set-cookie") and response.get_all("set-cookie")[0].startswith("seen=1")
    assert re.fullmatch(r"\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT", response.headers["date"])


async def test_another_tag_gets_the_whole_page() -> None:
    async with TestClient(make_app()) as client:
        response = await client.get("/tagged", headers=matching('"v6", W/"v8"'))
    assert response.status_code == 200
    assert response.content == b"the full page"
    assert response.headers["content-length"] == "13"
    assert response.headers["content-type"].startswith("text/html")


async def test_a_repeated_if_none_match_header_is_read_whole() -> None:
    """Mongrel2 passes a repeated header as a list; a tag in the second one counts."""
    async with TestClient(make_app()) as client:
        response = await client.get("/tagged", headers={"If-None-Match": ['"v1"', TAG]})
    assert_not_modified(response)


async def test_last_modified_from_a_datetime_and_if_modified_since() -> None:
    """set_header formats a datetime as an HTTP date; the date alone revalidates (no tag)."""
    async with TestClient(make_app()) as client:
        full = await client.get("/dated")
        same = await client.get("/dated", headers={"If-Modified-Since": MODIFIED_TEXT})
        later = await client.get("/dated", headers={"If-Modified-Since": LATER_TEXT})
        earlier = await client.get("/dated", headers={"If-Modified-Since": EARLIER_TEXT})
        garbage = await client.get("/dated", headers={"If-Modified-Since": "not a date"})
    assert full.status_code == 200 and full.headers["last-modified"] == MODIFIED_TEXT
    assert_not_modified(same)
    assert same.headers["last-modified"] == MODIFIED_TEXT
    assert_not_modified(later)
    assert (earlier.status_code, earlier.content) == (200, b"dated page")
    assert (garbage.status_code, garbage.content) == (200, b"dated page")


async def test_head_is_revalidated_like_get() -> None:
    async with TestClient(make_app()) as client:
        fresh = await client.head("/tagged", headers=matching())
        stale = await client.head("/tagged", headers=matching('"v6"'))
    assert_not_modified(fresh)
    assert fresh.headers["etag"] == TAG
    assert stale.status_code == 200 and stale.headers["content-length"] == "13"


async def test_unsafe_methods_are_never_not_modified() -> None:
    """A 304 to a POST would tell the client its change was not made."""
    async with TestClient(make_app()) as client:
        posted = await client.post("/tagged", headers=matching(), data=b"x")
        put = await client.put("/tagged", headers=matching(), data=b"x")
    assert (posted.status_code, posted.content) == (200, b"posted")
    assert (put.status_code, put.content) == (200, b"put")


@pytest.mark.parametrize(
    ("path", "status"),
    [("/created", 201), ("/missing", 404), ("/raises", 409), ("/moves", 302)],
)
async def test_other_statuses_are_never_turned_into_a_304(path: str, status: int) -> None:
    """Only a 200 is 'the representation': an error or a redirect must reach the client."""
    async with TestClient(make_app()) as client:
        response = await client.get(path, headers=matching())
    assert response.status_code == status
    assert response.headers["etag"] == TAG  # the tag was there to match, yet no 304


async def test_no_computed_tag_without_the_setting() -> None:
    async with TestClient(make_app()) as client:
        plain = await client.get("/plain")
        tagged = await client.get("/tagged")
    assert "etag" not in plain.headers
    assert tagged.get_all("etag") == [TAG]


async def test_the_etag_setting_tags_a_200_and_revalidates_it() -> None:
    async with TestClient(make_app(etag=True)) as client:
        first = await client.get("/plain")
        again = await client.get("/plain", headers=matching(first.headers["etag"]))
        head = await client.head("/plain", headers=matching(first.headers["etag"]))
    assert first.status_code == 200
    assert first.get_all("etag") == [body_etag(first.content)]
    assert first.content == b'{"plain":"page"}'
    assert_not_modified(again)
    assert again.headers["etag"] == first.headers["etag"]
    assert_not_modified(head)


async def test_the_etag_setting_leaves_posts_and_errors_untagged() -> None:
    async with TestClient(make_app(etag=True)) as client:
        posted = await client.post("/plain", data=b"x")
        absent = await client.get("/nowhere")
        created = await client.get("/created")
    assert posted.status_code == 200 and "etag" not in posted.headers
    assert absent.status_code == 404 and "etag" not in absent.headers
    assert created.status_code == 201 and created.get_all("etag") == [TAG]


async def test_the_etag_setting_keeps_a_handlers_own_tag() -> None:
    async with TestClient(make_app(etag=True)) as client:
        first = await client.get("/own")
        again = await client.get("/own", headers=matching('"mine"'))
    assert first.get_all("etag") == ['W/"mine"']
    assert_not_modified(again)


async def test_a_shared_response_object_is_not_changed() -> None:
    """Tagging it in place would leak one request's headers into every later one."""
    before = list(SHARED.headers)
    async with TestClient(make_app(etag=True, request_id_header=True)) as client:
        first = await client.get("/shared")
        for _ in range(3):
            again = await client.get("/shared", headers=matching(first.headers["etag"]))
            assert_not_modified(again)
        last = await client.get("/shared")
    assert SHARED.headers == before and len(SHARED.headers) == 1
    assert first.get_all("etag") == last.get_all("etag") == [body_etag(b"shared page")]


async def test_is_fresh_lets_a_handler_skip_the_work() -> None:
    Cheap.built = 0
    async with TestClient(make_app()) as client:
        full = await client.get("/cheap")
        skipped = await client.get("/cheap", headers=matching())
    assert full.status_code == 200 and Cheap.built == 1
    assert_not_modified(skipped)
    assert skipped.headers["etag"] == TAG
    assert Cheap.built == 1


async def test_is_fresh_is_false_for_a_post() -> None:
    async with TestClient(make_app()) as client:
        response = await client.post("/cheap", headers=matching(), data=b"x")
    assert response.content == b"stale"


@pytest.mark.parametrize("kind", ["datetime", "float", "str"])
async def test_is_fresh_takes_last_modified_in_any_form(kind: str) -> None:
    async with TestClient(make_app()) as client:
        same = await client.get(f"/probe/{kind}", headers={"If-Modified-Since": MODIFIED_TEXT})
        older = await client.get(f"/probe/{kind}", headers={"If-Modified-Since": EARLIER_TEXT})
        none = await client.get(f"/probe/{kind}")
    assert (same.content, older.content, none.content) == (b"fresh", b"stale", b"stale")


async def test_the_access_log_records_the_304(caplog: pytest.LogCaptureFixture) -> None:
    """Operators count revalidations from the log: it must show what was sent."""
    caplog.set_level(logging.INFO)
    async with TestClient(make_app(access_log=True)) as client:
        await client.get("/tagged", headers=matching())
        await client.get("/tagged")
    lines = [r.getMessage() for r in caplog.records if r.name == "brubeck.access"]
    assert len(lines) == 2
    assert re.match(r'127\.0\.0\.1 "GET /tagged" 304 0 ', lines[0])
    assert re.match(r'127\.0\.0\.1 "GET /tagged" 200 13 ', lines[1])


async def test_a_function_route_is_revalidated() -> None:
    async with TestClient(make_app()) as client:
        full = await client.get("/function")
        fresh = await client.get("/function", headers=matching())
    assert (full.status_code, full.content) == (200, b"function page")
    assert_not_modified(fresh)
    assert fresh.headers["cache-control"] == "no-cache"


async def test_an_awaiting_handler_is_revalidated() -> None:
    async with TestClient(make_app()) as client:
        fresh, stale = await asyncio.gather(
            client.get("/awaits", headers=matching()),
            client.get("/awaits", headers=matching('"v6"')),
        )
    assert_not_modified(fresh)
    assert fresh.headers["etag"] == TAG
    assert (stale.status_code, stale.content) == (200, b"awaited page")


# If-Match / If-Unmodified-Since: updates from an outdated copy (RFC 9110 §13.1.1, §13.1.4)


@pytest.mark.parametrize(
    ("headers", "etag", "last_modified", "holds"),
    [
        pytest.param({}, TAG, MODIFIED_TEXT, True, id="no-precondition"),
        pytest.param({b"if-match": b'"v7"'}, TAG, None, True, id="same-tag"),
        pytest.param({b"if-match": b'"v6"'}, TAG, None, False, id="other-tag"),
        pytest.param({b"if-match": b'"v6", "v7"'}, TAG, None, True, id="tag-in-list"),
        pytest.param({b"if-match": b'W/"v7"'}, TAG, None, False, id="weak-client-tag"),
        pytest.param({b"if-match": b'"v7"'}, 'W/"v7"', None, False, id="weak-current-tag"),
        pytest.param({b"if-match": b"*"}, TAG, None, True, id="star-exists"),
        pytest.param({b"if-match": b"*"}, None, None, False, id="star-nothing-there"),
        pytest.param({b"if-match": b'"v7"'}, None, None, False, id="no-current-tag"),
        pytest.param(
            {b"if-match": b'"v7"', b"if-unmodified-since": EARLIER_TEXT.encode()},
            TAG,
            MODIFIED_TEXT,
            True,
            id="if-match-wins-over-the-date",
        ),
        pytest.param(
            {b"if-unmodified-since": MODIFIED_TEXT.encode()},
            TAG,
            MODIFIED_TEXT,
            True,
            id="same-date",
        ),
        pytest.param(
            {b"if-unmodified-since": LATER_TEXT.encode()}, TAG, MODIFIED_TEXT, True, id="later-date"
        ),
        pytest.param(
            {b"if-unmodified-since": EARLIER_TEXT.encode()},
            TAG,
            MODIFIED_TEXT,
            False,
            id="changed-since",
        ),
        pytest.param({b"if-unmodified-since": b"never"}, TAG, MODIFIED_TEXT, True, id="bad-date"),
        pytest.param({b"if-match": [b'"v1"', b'"v7"']}, TAG, None, True, id="repeated-header"),
        pytest.param({b"if-match": 7}, TAG, None, True, id="junk-value-is-absent"),
    ],
)
def test_preconditions_hold(
    headers: dict[bytes, Any], etag: str | None, last_modified: str | None, holds: bool
) -> None:
    assert preconditions_hold(headers, etag, last_modified) is holds


class Document(JSONMessageHandler):
    """A versioned resource updated with optimistic locking."""

    version = 1

    def put(self) -> dict[str, int]:
        self.request.check_preconditions(f'"v{Document.version}"', MODIFIED)
        Document.version += 1
        return {"version": Document.version}


async def test_an_update_from_an_outdated_copy_gets_a_412_and_changes_nothing() -> None:
    Document.version = 1
    app = Brubeck(handler_tuples=[(r"^/doc$", Document)])
    async with TestClient(app) as client:
        first = await client.put("/doc", headers={"If-Match": '"v1"'}, data=b"x")
        stale = await client.put("/doc", headers={"If-Match": '"v1"'}, data=b"x")
        blind = await client.put("/doc", data=b"x")  # no precondition: last writer wins
        dated = await client.put("/doc", headers={"If-Unmodified-Since": EARLIER_TEXT}, data=b"x")
    assert (first.status_code, first.json()) == (200, {"version": 2})
    assert stale.status_code == 412
    assert stale.json()["error"]["status"] == 412
    assert (blind.status_code, blind.json()) == (200, {"version": 3})
    assert dated.status_code == 412
    assert Document.version == 3
