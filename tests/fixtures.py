"""Raw messages as Mongrel2 1.12.2 sends them, byte for byte.

Quoted from the verified captures of the protocol notes (§A2, §A3, §B5, §B7), where Mongrel2
was driven by curl and the python ``websockets`` client. The upload pair is the one capture
that was abridged (§B8): it is rebuilt from the POST capture with the elided keys filled in,
and its tnetstring lengths (353 and 401) are the ones Mongrel2 printed. ``drain`` reads back
what an app sent to a connection through ``TestClient``.
"""

from __future__ import annotations

from typing import Any

SENDER = b"54c6755b-9628-40a4-9a2d-cc82a816345e"

# §A2: curl 'http://127.0.0.1:6767/hello/world?a=1&b=two#frag' (curl strips the #frag)
GET_QUERY = (
    SENDER + b" 1 /hello/world 273:11:REMOTE_ADDR,9:127.0.0.1,6:METHOD,3:GET,10:URL_SCHEME,"
    b"4:http,7:PATTERN,1:/,5:QUERY,9:a=1&b=two,3:URI,22:/hello/world?a=1&b=two,7:VERSION,"
    b"8:HTTP/1.1,4:PATH,12:/hello/world,4:host,14:127.0.0.1:6767,10:user-agent,11:curl/7.88.1,"
    b"6:accept,3:*/*,15:x-forwarded-for,9:127.0.0.1,}0:,"
)

# §A2: curl -X POST -d 'name=value&x=y' http://127.0.0.1:6767/post
POST_FORM = (
    SENDER + b" 2 /post 304:11:REMOTE_ADDR,9:127.0.0.1,6:METHOD,4:POST,10:URL_SCHEME,4:http,"
    b"7:PATTERN,1:/,3:URI,5:/post,7:VERSION,8:HTTP/1.1,4:PATH,5:/post,4:host,14:127.0.0.1:6767,"
    b"10:user-agent,11:curl/7.88.1,6:accept,3:*/*,14:content-length,2:14,12:content-type,"
    b"33:application/x-www-form-urlencoded,15:x-forwarded-for,9:127.0.0.1,}14:name=value&x=y,"
)

# §A2: -H 'X-Dup: one' -H 'X-Dup: two' -H 'X-Dup: three' -H 'Cookie: a=1' -H 'Cookie: b=2'
REPEATED_HEADERS = (
    SENDER + b" 3 /dup 282:11:REMOTE_ADDR,9:127.0.0.1,6:METHOD,3:GET,10:URL_SCHEME,4:http,"
    b"7:PATTERN,1:/,3:URI,4:/dup,7:VERSION,8:HTTP/1.1,4:PATH,4:/dup,6:cookie,12:3:a=1,3:b=2,]"
    b"4:host,14:127.0.0.1:6767,10:user-agent,11:curl/7.88.1,6:accept,3:*/*,15:x-forwarded-for,"
    b"9:127.0.0.1,5:x-dup,20:3:one,3:two,5:three,]}0:,"
)

# §A2: a raw socket sending 'GET /frag/x?q=1#top'
FRAGMENT = (
    SENDER + b" 5 /frag/x 217:11:REMOTE_ADDR,9:127.0.0.1,6:METHOD,3:GET,10:URL_SCHEME,4:http,"
    b"7:PATTERN,1:/,8:FRAGMENT,3:top,5:QUERY,3:q=1,3:URI,11:/frag/x?q=1,7:VERSION,8:HTTP/1.1,"
    b"4:PATH,7:/frag/x,4:host,9:localhost,15:x-forwarded-for,9:127.0.0.1,}0:,"
)

# §A2: the same kind of request with protocol='json' and download.flow_control=1
JSON_GET = (
    SENDER + b' 1 /json/path 334:{"PATH":"/json/path","x-dup":["one","two"],'
    b'"x-forwarded-for":"127.0.0.1","DOWNLOAD_CREDITS":"102400","accept":"*/*",'
    b'"user-agent":"curl/7.88.1","host":"127.0.0.1:6767","x-q":"say \\"hi\\" \\\\back",'
    b'"METHOD":"GET","VERSION":"HTTP/1.1","URI":"/json/path?a=1&b=2","QUERY":"a=1&b=2",'
    b'"PATTERN":"/","URL_SCHEME":"http","REMOTE_ADDR":"127.0.0.1"},0:,'
)

# §A3 and §B5: Mongrel2's own notices, in both header protocols
DISCONNECT = SENDER + b' 4 @* 16:6:METHOD,4:JSON,}21:{"type":"disconnect"},'
DISCONNECT_JSON = SENDER + b' 4 @* 17:{"METHOD":"JSON"},21:{"type":"disconnect"},'
CREDITS = SENDER + b' 6 @* 41:16:DOWNLOAD_CREDITS,2:50,6:METHOD,4:JSON,}18:{"type":"credits"},'
CREDITS_JSON = SENDER + b' 6 @* 41:{"METHOD":"JSON","DOWNLOAD_CREDITS":"56"},18:{"type":"credits"},'

# §B7: the python websockets client opening /ws/echo?x=1; the body is the accept key
WEBSOCKET_HANDSHAKE = (
    SENDER + b" 26 /ws/echo 395:11:REMOTE_ADDR,9:127.0.0.1,6:METHOD,19:WEBSOCKET_HANDSHAKE,"
    b"10:URL_SCHEME,4:http,7:PATTERN,1:/,5:QUERY,3:x=1,3:URI,12:/ws/echo?x=1,7:VERSION,"
    b"8:HTTP/1.1,4:PATH,8:/ws/echo,7:upgrade,9:websocket,4:host,14:127.0.0.1:6767,"
    b"10:user-agent,27:Python/3.11 websockets/17.4,17:sec-websocket-key,"
    b"24:dMvTvJa4tS1UepA1Fn/DsA==,21:sec-websocket-version,2:13,10:connection,7:Upgrade,"
    b"15:x-forwarded-for,9:127.0.0.1,}28:i7/c7XWCeQrSwxOumCFE1x/0KdY=,"
)

# §B8: a 1 MiB POST over limits.content_length: first "start", then "start" plus "done"
_UPLOAD_HEAD = (
    b"11:REMOTE_ADDR,9:127.0.0.1,6:METHOD,4:POST,10:URL_SCHEME,4:http,7:PATTERN,1:/,"
    b"3:URI,7:/upload,7:VERSION,8:HTTP/1.1,4:PATH,7:/upload,"
    b"23:x-mongrel2-upload-start,18:/tmp/upload.C1CV4a,"
)
_UPLOAD_TAIL = (
    b"4:host,14:127.0.0.1:6767,10:user-agent,11:curl/7.88.1,6:accept,3:*/*,"
    b"14:content-length,7:1048576,12:content-type,24:application/octet-stream,"
    b"15:x-forwarded-for,9:127.0.0.1,}0:,"
)
UPLOAD_START = SENDER + b" 25 /upload 353:" + _UPLOAD_HEAD + _UPLOAD_TAIL
UPLOAD_DONE = (
    SENDER
    + b" 25 /upload 401:"
    + _UPLOAD_HEAD
    + b"22:x-mongrel2-upload-done,18:/tmp/upload.C1CV4a,"
    + _UPLOAD_TAIL
)

# §A5: the control reply that cancels connection 18
CTL_CANCEL = SENDER + b" 4:X 18, 26:3:ctl,16:6:cancel,4:true!}]"

REQUESTS = {
    "get_query": GET_QUERY,
    "post_form": POST_FORM,
    "repeated_headers": REPEATED_HEADERS,
    "fragment": FRAGMENT,
    "json_get": JSON_GET,
    "websocket_handshake": WEBSOCKET_HANDSHAKE,
    "upload_start": UPLOAD_START,
    "upload_done": UPLOAD_DONE,
}
NOTICES = {
    "disconnect": DISCONNECT,
    "disconnect_json": DISCONNECT_JSON,
    "credits": CREDITS,
    "credits_json": CREDITS_JSON,
}
ALL = {**REQUESTS, **NOTICES}


def with_conn_id(raw: bytes, conn_id: int) -> bytes:
    """The same message as if it came from another connection."""
    sender, _, rest = raw.partition(b" ")
    return b"%s %d %s" % (sender, conn_id, rest.partition(b" ")[2])


async def drain(client: Any, conn_id: int, wait: float = 0.2) -> list[bytes]:
    """Every message a ``TestClient``'s app sent to ``conn_id`` until none comes for ``wait``
    seconds (the client's own timeout is put back after)."""
    got: list[bytes] = []
    saved, client.timeout = client.timeout, wait
    try:
        while True:
            got.append(await client.receive(conn_id))
    except TimeoutError:
        return got
    finally:
        client.timeout = saved


class RecordingConnection:
    """Stands in for ``Mongrel2Connection`` in ``app.msg_conn``: records what the app sends
    (a close as ``b""``)."""

    sender_id = None

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send_raw(self, data: bytes) -> None:
        self.sent.append(data)

    def close_connection(self, request: Any) -> None:
        self.sent.append(b"")
