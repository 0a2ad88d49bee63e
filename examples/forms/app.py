"""The forms app: an HTML form that uploads a file; the answer is its name, size and SHA-256."""

import hashlib
import html

from brubeck import Brubeck, HTTPError, Mongrel2Connection, WebMessageHandler

#: The whole form (file and note) is read into memory: this bounds it.
MAX_BODY_SIZE = 1024 * 1024

PAGE = f"""<!DOCTYPE html>
<html><head><title>Upload</title></head>
<body>
<h1>Upload a file</h1>
<form method="post" action="/" enctype="multipart/form-data">
  <p><label>Note <input name="note"></label></p>
  <p><input type="file" name="file"></p>
  <p><button>Upload</button></p>
</form>
<p>Up to {MAX_BODY_SIZE / 2**20:g} MiB in all (the app's <code>max_body_size</code>); more is
refused with a 413. Mongrel2 writes a body over its <code>limits.content_length</code> to a
temporary file, which the app reads back.</p>
</body></html>
"""


class UploadHandler(WebMessageHandler):
    def get(self):
        return PAGE

    def post(self):
        upload = self.get_file("file")
        if upload is None or not upload.filename:
            raise HTTPError(400, "choose a file to upload")
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
    max_body_size=MAX_BODY_SIZE,
)


if __name__ == "__main__":
    app.run()
