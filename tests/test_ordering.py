"""ordering.py: pipelined answers leave in the order their requests came."""

from __future__ import annotations

from types import SimpleNamespace

from brubeck.ordering import AnswerOrder


def request(conn_id: bytes, name: str) -> SimpleNamespace:
    return SimpleNamespace(conn_id=conn_id, name=name)


def test_with_nothing_pending_an_answer_goes_at_once() -> None:
    sent: list[tuple[str, str]] = []
    order = AnswerOrder(lambda req, resp: sent.append((req.name, resp)))
    order.deliver(request(b"1", "a"), "A")
    assert sent == [("a", "A")]
    assert order.queues == {}


def test_a_later_answer_waits_for_an_earlier_one_on_its_connection_only() -> None:
    sent: list[tuple[str, str]] = []
    order = AnswerOrder(lambda req, resp: sent.append((req.name, resp)))
    first, second, third = request(b"1", "a"), request(b"1", "b"), request(b"1", "c")
    slot = order.reserve(first)  # an awaiting handler
    assert order.may_stream(first)
    order.deliver(second, "B")
    order.deliver(third, "C")
    order.deliver(request(b"2", "other"), "O")  # another connection is not held up
    assert sent == [("other", "O")]
    assert not order.may_stream(second)
    slot[1] = "A"
    order.release(b"1")
    assert sent == [("other", "O"), ("a", "A"), ("b", "B"), ("c", "C")]
    assert order.queues == {}


def test_a_forgotten_connection_sends_nothing_more() -> None:
    sent: list[tuple[str, str]] = []
    order = AnswerOrder(lambda req, resp: sent.append((req.name, resp)))
    slot = order.reserve(request(b"1", "a"))
    order.deliver(request(b"1", "b"), "B")
    # The answered request is handed back (its resources are the caller's to free).
    assert [r.name for r in order.forget(b"1")] == ["b"]
    assert order.forget(b"1") == []
    slot[1] = "A"
    order.release(b"1")
    assert sent == []
    assert order.queues == {}
