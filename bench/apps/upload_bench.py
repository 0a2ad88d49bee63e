"""The upload benchmark's app: SHA-256 of a body, from a file or as it arrives.

``/file`` hashes ``request.upload`` (a file Mongrel2 or Brubeck wrote) or the inline body;
``/live`` is a ``stream_request_body`` handler that hashes the pieces as they come. The
streamed-upload settings come from the environment (``UPLOAD_WINDOW``, ``UPLOAD_DIR``).
"""

import hashlib
import os

from brubeck import Brubeck, JSONMessageHandler


class File(JSONMessageHandler):
    def post(self):
        digest = hashlib.sha256()
        upload = self.request.upload
        if upload is None:
            digest.update(self.request.body)
        else:
            with upload.open() as stored:
                while block := stored.read(1 << 20):
                    digest.update(block)
        self.add_to_payload("sha256", digest.hexdigest())
        return self.render()


class Live(JSONMessageHandler):
    stream_request_body = True

    async def post(self):
        digest = hashlib.sha256()
        async for piece in self.request.body_stream:
            digest.update(piece)
        self.add_to_payload("sha256", digest.hexdigest())
        return self.render()


app = Brubeck(
    handler_tuples=[(r"^/file$", File), (r"^/live$", Live)],
    upload_stream_window=int(os.environ.get("UPLOAD_WINDOW", 256 * 1024)),
    upload_dir=os.environ.get("UPLOAD_DIR") or None,
    max_upload_size=4 << 30,
)
