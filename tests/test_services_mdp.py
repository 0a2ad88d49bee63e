"""services/mdp.py: MDP/0.1 frames built and parsed, against byte fixtures from RFC 7."""

import pytest

from brubeck.services import mdp
from brubeck.services.mdp import MDPError

WORKER_ID = b"\x00k\x8bEg"
CLIENT_ID = b"\x00k\x8bEh"
RID = b"\x00\x00\x00\x00\x00\x00\x00\x07"


def test_constants_are_the_rfc_bytes():
    assert (mdp.CLIENT, mdp.WORKER) == (b"MDPC01", b"MDPW01")
    assert [mdp.READY, mdp.REQUEST, mdp.REPLY, mdp.HEARTBEAT, mdp.DISCONNECT] == [
        b"\x01",
        b"\x02",
        b"\x03",
        b"\x04",
        b"\x05",
    ]


def test_client_request_strict_and_with_request_id():
    assert mdp.client_request(b"echo", [b"text", b"hi"]) == [
        b"",
        b"MDPC01",
        b"echo",
        b"text",
        b"hi",
    ]
    assert mdp.client_request(b"echo", [b"x"], RID) == [RID, b"", b"MDPC01", b"echo", b"x"]
    with pytest.raises(MDPError):
        mdp.client_request(b"echo", [])


def test_broker_parses_a_strict_client_request():
    msg = mdp.parse_at_broker([CLIENT_ID, b"", b"MDPC01", b"echo", b"a", b"b"])
    assert msg == mdp.ClientRequest((CLIENT_ID,), b"echo", [b"a", b"b"])


def test_broker_keeps_the_request_id_in_the_envelope():
    msg = mdp.parse_at_broker([CLIENT_ID, RID, b"", b"MDPC01", b"echo", b"a"])
    assert msg == mdp.ClientRequest((CLIENT_ID, RID), b"echo", [b"a"])
    assert mdp.to_client(msg.envelope, b"echo", [b"r"]) == [
        CLIENT_ID,
        RID,
        b"",
        b"MDPC01",
        b"echo",
        b"r",
    ]


@pytest.mark.parametrize(
    ("frames", "command", "fields"),
    [
        ([WORKER_ID, b"", b"MDPW01", b"\x01", b"echo"], mdp.READY, {"service": b"echo"}),
        (
            [WORKER_ID, b"", b"MDPW01", b"\x03", b"tok", b"", b"x", b"y"],
            mdp.REPLY,
            {"address": b"tok", "body": (b"x", b"y")},
        ),
        ([WORKER_ID, b"", b"MDPW01", b"\x04"], mdp.HEARTBEAT, {}),
        ([WORKER_ID, b"", b"MDPW01", b"\x05"], mdp.DISCONNECT, {}),
    ],
)
def test_broker_parses_worker_commands(frames, command, fields):
    msg = mdp.parse_at_broker(frames)
    assert isinstance(msg, mdp.WorkerCommand)
    assert (msg.identity, msg.command) == (WORKER_ID, command)
    for name, value in fields.items():
        assert getattr(msg, name) == value


@pytest.mark.parametrize(
    "frames",
    [
        [CLIENT_ID, b"MDPC01", b"echo", b"x"],  # no delimiter
        [CLIENT_ID, b""],  # no header
        [CLIENT_ID, b"", b"MDPC02", b"echo", b"x"],  # another protocol
        [CLIENT_ID, b"", b"MDPC01", b"echo"],  # no body
        [CLIENT_ID, RID, b"", b"MDPW01", b"\x04"],  # a worker with a request id
        [WORKER_ID, b"", b"MDPW01"],  # no command
        [WORKER_ID, b"", b"MDPW01", b"\x01"],  # READY without a service
        [WORKER_ID, b"", b"MDPW01", b"\x01", b"a", b"b"],  # READY with two
        [WORKER_ID, b"", b"MDPW01", b"\x03", b"tok", b"x"],  # REPLY without the empty frame
        [WORKER_ID, b"", b"MDPW01", b"\x03", b"tok", b""],  # REPLY without a body
        [WORKER_ID, b"", b"MDPW01", b"\x04", b"extra"],
        [WORKER_ID, b"", b"MDPW01", b"\x02", b"tok", b"", b"x"],  # workers do not REQUEST
        [WORKER_ID, b"", b"MDPW01", b"\x09"],
        [b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h", b"i", b"", b"MDPC01", b"s", b"x"],
    ],
)
def test_broker_refuses_malformed_messages(frames):
    with pytest.raises(MDPError):
        mdp.parse_at_broker(frames)


def test_request_to_worker_has_one_address_frame():
    assert mdp.request_to_worker(WORKER_ID, b"tok", [b"text", b"hi"]) == [
        WORKER_ID,
        b"",
        b"MDPW01",
        b"\x02",
        b"tok",
        b"",
        b"text",
        b"hi",
    ]
    assert mdp.to_worker(WORKER_ID, mdp.HEARTBEAT) == [WORKER_ID, b"", b"MDPW01", b"\x04"]


def test_worker_side_frames():
    assert mdp.ready(b"echo") == [b"", b"MDPW01", b"\x01", b"echo"]
    assert mdp.reply(b"tok", [b"r"]) == [b"", b"MDPW01", b"\x03", b"tok", b"", b"r"]
    assert mdp.heartbeat() == [b"", b"MDPW01", b"\x04"]
    assert mdp.disconnect() == [b"", b"MDPW01", b"\x05"]
    with pytest.raises(MDPError):
        mdp.reply(b"tok", [])


def test_worker_parses_broker_commands():
    request = mdp.parse_at_worker([b"", b"MDPW01", b"\x02", b"tok", b"", b"a", b"b"])
    assert request == mdp.BrokerCommand(mdp.REQUEST, b"tok", (b"a", b"b"))
    assert mdp.parse_at_worker([b"", b"MDPW01", b"\x04"]).command == mdp.HEARTBEAT
    assert mdp.parse_at_worker([b"", b"MDPW01", b"\x05"]).command == mdp.DISCONNECT
    for bad in (
        [b"", b"MDPC01", b"\x04"],
        [b"x", b"MDPW01", b"\x04"],
        [b"", b"MDPW01", b"\x02", b"tok", b"a"],
        [b"", b"MDPW01", b"\x01", b"echo"],
    ):
        with pytest.raises(MDPError):
            mdp.parse_at_worker(bad)


def test_client_parses_replies():
    assert mdp.parse_client_reply([RID, b"", b"MDPC01", b"echo", b"r"]) == mdp.ClientReply(
        RID, b"echo", [b"r"]
    )
    assert mdp.parse_client_reply([b"", b"MDPC01", b"echo", b"r"]).request_id is None
    for bad in ([RID, b"MDPC01", b"echo", b"r"], [b"", b"MDPW01", b"echo", b"r"], [b"", b"MDPC01"]):
        with pytest.raises(MDPError):
            mdp.parse_client_reply(bad)


@pytest.mark.parametrize("name", ["", "has space", "tab\t", "é", "x" * 256])
def test_service_names_are_printable_ascii(name):
    with pytest.raises(ValueError, match="service name"):
        mdp.service_name(name)
    assert mdp.service_name("echo.v2") == b"echo.v2"
