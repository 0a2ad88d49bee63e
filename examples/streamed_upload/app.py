"""Uploads in pieces (Mongrel2's upload.stream=1): one handler stores them, one hashes as they come.

brubeck run examples/streamed_upload/app.py:app --mongrel2
head -c 50000000 /dev/urandom > big.bin
curl --data-binary @big.bin http://127.0.0.1:6767/store    # written to a file, then handled
curl --data-binary @big.bin http://127.0.0.1:6767/hash     # hashed piece by piece, never stored

Mongrel2 writes no file in this mode, so this process could run on another machine.
"""

import hashlib
import tempfile

from brubeck import Brubeck, JSONMessageHandler, Mongrel2Connection

MAX_BYTES = 200 * 1024 * 1024


class Store(JSONMessageHandler):
    """Runs once the whole body is in a file of Brubeck's (in upload_dir)."""

    def post(self):
        digest = hashlib.sha256()
        upload = self.request.upload  # None when the body was small enough to come inline
        if upload is None:
            digest.update(self.request.body)
            size = len(self.request.body)
        else:
            with upload.open() as stored:  # upload.save_as(path) would keep it
                while block := stored.read(1 << 20):
                    digest.update(block)
            size = upload.size  # the file is deleted after this response
        self.add_to_payload("size", size)
        self.add_to_payload("sha256", digest.hexdigest())
        return self.render()


class Hash(JSONMessageHandler):
    """Runs at the first piece and reads the rest as the client sends it."""

    stream_request_body = True

    async def post(self):
        digest = hashlib.sha256()
        stream = self.request.body_stream
        async for piece in stream:  # the client is held back while this loop does not read
            digest.update(piece)
        self.add_to_payload("size", stream.received)
        self.add_to_payload("sha256", digest.hexdigest())
        return self.render()


app = Brubeck(
    msg_conn=Mongrel2Connection("tcp://127.0.0.1:9999", "tcp://127.0.0.1:9998"),
    handler_tuples=[(r"^/store$", Store), (r"^/hash$", Hash)],
    # What `brubeck run --mongrel2` and `brubeck mongrel2 config` put in Mongrel2's settings.
    mongrel2_settings={"upload.stream": 1},
    upload_dir=tempfile.gettempdir(),
    max_upload_size=MAX_BYTES,
)

if __name__ == "__main__":
    app.run()
