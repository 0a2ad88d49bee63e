"""Uploads of any size: Mongrel2 spools big and chunked bodies to a file; the handler hashes it.

brubeck run examples/upload/app.py:app --mongrel2
head -c 50000000 /dev/urandom > big.bin
curl --data-binary @big.bin http://127.0.0.1:6767/upload
"""

import hashlib

from brubeck import Brubeck, JSONMessageHandler, Mongrel2Connection

MAX_BYTES = 200 * 1024 * 1024


class Upload(JSONMessageHandler):
    def accept_upload(self):
        """Decide at upload start, from the headers alone; False answers 413 at once."""
        return int(self.request.headers.get("content-length") or 0) <= MAX_BYTES

    def post(self):
        digest = hashlib.sha256()
        upload = self.request.upload  # None when the body was small enough to come inline
        if upload is None:
            digest.update(self.request.body)
            size = len(self.request.body)
        else:
            with upload.open() as stream:
                while block := stream.read(1 << 20):
                    digest.update(block)
            size = upload.size  # the file is deleted after this response
        self.add_to_payload("size", size)
        self.add_to_payload("sha256", digest.hexdigest())
        self.add_to_payload("spooled", upload is not None)
        return self.render()


app = Brubeck(
    msg_conn=Mongrel2Connection("tcp://127.0.0.1:9999", "tcp://127.0.0.1:9998"),
    handler_tuples=[(r"^/upload$", Upload)],
)

if __name__ == "__main__":
    app.run()
