"""streaming.py: the credit window and the Server-Sent Events format, without a server."""

from __future__ import annotations

import asyncio

import pytest

from brubeck.streaming import CreditWindow, CreditWindows, format_event


def test_format_event_fields_and_multiline_data():
    assert format_event("hi") == b"data: hi\n\n"
    assert format_event("a\nb\r\nc", event="e", id="7", retry=500) == (
        b"event: e\nid: 7\nretry: 500\ndata: a\ndata: b\ndata: c\n\n"
    )


@pytest.mark.parametrize("field", ["event", "id"])
def test_format_event_refuses_line_breaks_in_fields(field):
    with pytest.raises(ValueError, match="line breaks"):
        format_event("x", **{field: "a\nb"})


async def test_window_sends_within_credits_and_splits_the_rest():
    sent: list[bytes] = []
    window = CreditWindow(limit=10_000)
    first, second = b"a" * 5000, b"b" * 6000
    window.send(sent.append, first)
    window.send(sent.append, second)  # only 5000 fit: split, the rest waits for credits
    await asyncio.sleep(0)
    assert sent == [first, b"b" * 5000] and window.pending == 10_000
    window.send(sent.append, b"")  # a close waits its turn behind queued bytes
    window.credit(7000)
    await asyncio.wait_for(window.drained(), 1)
    assert sent == [first, b"b" * 5000, b"b" * 1000, b""] and window.pending == 4000


async def test_window_assumes_lost_credits_after_a_stall(monkeypatch):
    monkeypatch.setattr("brubeck.streaming.CREDIT_STALL", 0.05)
    sent: list[bytes] = []
    window = CreditWindow(limit=4)
    window.send(sent.append, b"abcdefgh")
    await asyncio.wait_for(window.drained(), 1)
    assert b"".join(sent) == b"abcdefgh"


def test_credit_windows_open_from_the_announcement_and_take_credits() -> None:
    windows = CreditWindows()
    windows.open(b"7", b"102400")
    windows.open(b"8", b"not a number")  # ignored: no window rather than a wrong one
    windows.open(b"9", [b"1", b"2"])
    assert list(windows) == [b"7"] and windows[b"7"].limit == 102400
    windows[b"7"].pending = 5000
    windows.credit(b"7", b"3000")
    windows.credit(b"7", b"junk")  # counts as nothing
    windows.credit(b"404", b"10")  # no such window: nothing happens
    assert windows[b"7"].pending == 2000


def test_credit_windows_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    windows = CreditWindows()
    monkeypatch.setattr(CreditWindows, "limit", 3)
    for n in range(5):
        windows.open(b"%d" % n, b"100")
    assert list(windows) == [b"2", b"3", b"4"]  # the oldest went first
