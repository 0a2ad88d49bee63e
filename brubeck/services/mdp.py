"""The Majordomo Protocol, MDP/0.1 (ZeroMQ RFC 7), as lists of frames: no sockets, no I/O.

Rules of this module:
- frames are ``bytes``; a message is the list of frames one socket sends or receives: the
  broker's ROUTER sees the sender's identity first, a DEALER does not;
- parsers return a whole message or raise ``MDPError``, never half of one;
- one extension, on the client side only: a client MAY put one more envelope frame, a request
  id, between its identity and the empty delimiter. The broker keeps the envelope (identity and
  request id) and returns it unchanged with the reply, so one DEALER can have many requests
  outstanding. Strict clients send none and work as RFC 7 says. Workers never see it: the
  client address a worker gets is a single opaque frame that the broker chose.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

CLIENT = b"MDPC01"
WORKER = b"MDPW01"

READY = b"\x01"
REQUEST = b"\x02"
REPLY = b"\x03"
HEARTBEAT = b"\x04"
DISCONNECT = b"\x05"

COMMAND_NAMES = {
    READY: "READY",
    REQUEST: "REQUEST",
    REPLY: "REPLY",
    HEARTBEAT: "HEARTBEAT",
    DISCONNECT: "DISCONNECT",
}

#: Most frames an envelope may have before the delimiter: identity, request id, and a few
#: more for clients behind ROUTER/DEALER proxies.
MAX_ENVELOPE = 8


class MDPError(ValueError):
    """A message that is not valid MDP/0.1: dropped by whoever received it."""


def service_name(name: str | bytes) -> bytes:
    """A service name as sent on the wire: printable ASCII, 1 to 255 bytes."""
    raw = name.encode("utf-8") if isinstance(name, str) else bytes(name)
    if not 0 < len(raw) <= 255 or not all(0x20 < c < 0x7F for c in raw):
        raise ValueError(
            f"a service name is 1 to 255 printable ASCII characters with no spaces, got {name!r}"
        )
    return raw


def worker_service_name(name: str | bytes) -> bytes:
    """A service name a worker may register: any but ``mmi.*``, which the broker answers."""
    raw = service_name(name)
    if raw.startswith(b"mmi."):
        raise ValueError(f"mmi.* is reserved for the broker's management interface, got {name!r}")
    return raw


# Client side: what a client's DEALER sends and receives.


def client_request(
    service: bytes, body: Sequence[bytes], request_id: bytes | None = None
) -> list[bytes]:
    """A REQUEST from a DEALER client; with ``request_id``, the envelope carries it."""
    if not body:
        raise MDPError("a request needs at least one body frame")
    head = [b""] if request_id is None else [request_id, b""]
    return [*head, CLIENT, service, *body]


@dataclass(frozen=True, slots=True)
class ClientReply:
    """A REPLY as a DEALER client receives it."""

    request_id: bytes | None
    service: bytes
    body: list[bytes]


def parse_client_reply(frames: Sequence[bytes]) -> ClientReply:
    """Parse ``[request_id,] "", "MDPC01", service, body...`` received by a DEALER client."""
    request_id: bytes | None = None
    rest = list(frames)
    if rest and rest[0] != b"":
        request_id, rest = rest[0], rest[1:]
    if len(rest) < 4 or rest[0] != b"":
        raise MDPError(f"a client reply is [id,] '', MDPC01, service, body; got {_show(frames)}")
    if rest[1] != CLIENT:
        raise MDPError(f"not an MDP/Client reply: header {rest[1][:16]!r}")
    return ClientReply(request_id, rest[2], rest[3:])


# Broker side: what the broker's ROUTER receives and sends.


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """A client's REQUEST at the broker; ``envelope`` is everything before the delimiter."""

    envelope: tuple[bytes, ...]
    service: bytes
    body: list[bytes]


@dataclass(frozen=True, slots=True)
class WorkerCommand:
    """A worker's command at the broker: READY has ``service``, REPLY ``address`` and ``body``."""

    identity: bytes
    command: bytes
    service: bytes = b""
    address: bytes = b""
    body: tuple[bytes, ...] = ()


def parse_at_broker(frames: Sequence[bytes]) -> ClientRequest | WorkerCommand:
    """Parse one message received on the broker's ROUTER socket."""
    try:
        delimiter = frames.index(b"", 1)
    except ValueError:
        raise MDPError(f"no empty delimiter frame: {_show(frames)}") from None
    if delimiter > MAX_ENVELOPE:
        raise MDPError(f"an envelope of {delimiter} frames; at most {MAX_ENVELOPE} are allowed")
    header = frames[delimiter + 1] if len(frames) > delimiter + 1 else None
    rest = frames[delimiter + 2 :]
    if header == CLIENT:
        if len(rest) < 2:
            raise MDPError("a client REQUEST is MDPC01, service name and at least one body frame")
        return ClientRequest(tuple(frames[:delimiter]), rest[0], list(rest[1:]))
    if header != WORKER:
        shown = None if header is None else header[:16]
        raise MDPError(f"not an MDP/0.1 message: header {shown!r}, expected MDPC01 or MDPW01")
    if delimiter != 1:
        raise MDPError("a worker message has exactly one envelope frame (its identity)")
    if not rest:
        raise MDPError("an MDPW01 message without a command frame")
    identity, command, args = frames[0], rest[0], rest[1:]
    if command == READY:
        if len(args) != 1 or not args[0]:
            raise MDPError("READY is followed by exactly one frame, the service name")
        return WorkerCommand(identity, command, service=args[0])
    if command == REPLY:
        if len(args) < 3 or args[1] != b"":
            raise MDPError("REPLY is client address, empty frame, then at least one body frame")
        return WorkerCommand(identity, command, address=args[0], body=tuple(args[2:]))
    if command in (HEARTBEAT, DISCONNECT):
        if args:
            raise MDPError(f"{COMMAND_NAMES[command]} has no frames after the command")
        return WorkerCommand(identity, command)
    raise MDPError(f"a worker may not send command {command[:4]!r}")


def to_client(envelope: Sequence[bytes], service: bytes, body: Sequence[bytes]) -> list[bytes]:
    """The REPLY the broker's ROUTER sends to a client (the envelope it came with first)."""
    return [*envelope, b"", CLIENT, service, *body]


def to_worker(identity: bytes, command: bytes) -> list[bytes]:
    """A HEARTBEAT or DISCONNECT the broker's ROUTER sends to a worker."""
    return [identity, b"", WORKER, command]


def request_to_worker(identity: bytes, address: bytes, body: Sequence[bytes]) -> list[bytes]:
    """The REQUEST the broker's ROUTER sends to a worker; ``address`` is one opaque frame."""
    return [identity, b"", WORKER, REQUEST, address, b"", *body]


# Worker side: what a worker's DEALER sends and receives.


def ready(service: bytes) -> list[bytes]:
    return [b"", WORKER, READY, service]


def reply(address: bytes, body: Sequence[bytes]) -> list[bytes]:
    if not body:
        raise MDPError("a reply needs at least one body frame")
    return [b"", WORKER, REPLY, address, b"", *body]


def heartbeat() -> list[bytes]:
    return [b"", WORKER, HEARTBEAT]


def disconnect() -> list[bytes]:
    return [b"", WORKER, DISCONNECT]


@dataclass(frozen=True, slots=True)
class BrokerCommand:
    """A broker's command as a worker's DEALER receives it."""

    command: bytes
    address: bytes = b""
    body: tuple[bytes, ...] = ()


def parse_at_worker(frames: Sequence[bytes]) -> BrokerCommand:
    """Parse ``"", "MDPW01", command, ...`` received by a worker's DEALER."""
    if len(frames) < 3 or frames[0] != b"" or frames[1] != WORKER:
        raise MDPError(f"a broker command is '', MDPW01, command, ...; got {_show(frames)}")
    command, args = frames[2], frames[3:]
    if command == REQUEST:
        if len(args) < 3 or args[1] != b"":
            raise MDPError("REQUEST is client address, empty frame, then at least one body frame")
        return BrokerCommand(command, args[0], tuple(args[2:]))
    if command in (HEARTBEAT, DISCONNECT):
        return BrokerCommand(command)
    raise MDPError(f"a broker may not send command {command[:4]!r}")


def _show(frames: Sequence[bytes]) -> str:
    """A short picture of a message for error text: frame count and the first few frames."""
    shown = ", ".join(repr(bytes(f[:16])) for f in list(frames)[:6])
    more = ", ..." if len(frames) > 6 else ""
    return f"{len(frames)} frames [{shown}{more}]"
