"""The forms app: an HTML form that uploads a file; the answer is its name, size and SHA-256."""

import hashlib
import html

from brubeck import Brubeck, HTTPError, Mongrel2Connection, WebMessageHandler

PAGE = """<!DOCTYPE html>
<html><head><title>Upload</title></head>
<body>
<h1>Upload a file</h1>
<form method="post" action="/" enctype="multipart/form-data">
  <p><label>Note <input name="note"></label></p>
  <p><input type="file" name="file"></p>
  <p><button>Upload</button></p>
</form>
<p>Mongrel2 sends bodies up to its <code>limits.content_length</code> (20480 bytes by default)
inline; this example reads only those.</p>
</body></html>
"""


class UploadHandler(WebMessageHandler):
    def get(self):
        return PAGE

    def post(self):
        upload = self.get_file("file")
        if upload is None or not upload.filename:
            raise HTTPError(400, "choose a file (one under Mongrel2's limits.content_length)")
        note = self.get_argument("note", "")
        rows = [
            ("name", upload.filename),
            ("size", f"{upload.size} bytes"),
            ("type", upload.content_type),
            ("SHA-256", hashlib.sha256(upload.body).hexdigest()),
            ("note", note),
        ]
        cells = "".join(
            f"<tr><th>{key}</th><td>{html.escape(value)}</td></tr>" for key, value in rows
        )
        return f'<!DOCTYPE html><table>{cells}</table><p><a href="/">Another</a></p>'


app = Brubeck(
    msg_conn=Mongrel2Connection("tcp://127.0.0.1:9999", "tcp://127.0.0.1:9998"),
    handler_tuples=[(r"^/$", UploadHandler)],
    max_body_size=1024 * 1024,
)


if __name__ == "__main__":
    app.run()
