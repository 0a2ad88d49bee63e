"""Downloads behind a login: files sent by a handler, with resume (byte ranges) and caching.

Mongrel2 serves public directories itself; a handler sends the files it must decide about.

brubeck run examples/downloads/app.py:app --mongrel2
curl -i http://127.0.0.1:6767/files/report.csv                       # 403: no login yet
curl -c jar -i -d user=ada http://127.0.0.1:6767/login               # a signed session cookie
curl -b jar -i http://127.0.0.1:6767/files/report.csv                # ETag, Accept-Ranges
curl -b jar -i -H 'If-None-Match: <that ETag>' http://127.0.0.1:6767/files/report.csv   # 304
curl -b jar -o big.bin http://127.0.0.1:6767/files/big.bin           # 3 MB, streamed
curl -b jar -C 1000000 -o big.bin http://127.0.0.1:6767/files/big.bin   # resume: a 206
curl -b jar -OJ http://127.0.0.1:6767/export/report.csv              # saved as "report 2026.csv"
curl -b jar -i --path-as-is http://127.0.0.1:6767/files/../app.py    # 404: names stay inside
"""

import os
import tempfile
from pathlib import Path

from brubeck import Brubeck, HTTPError, Mongrel2Connection, WebMessageHandler

#: The files to share; a real app would point at its storage.
#: One directory for every worker process: a range must cut the same file in each of them.
SHARED = Path(os.environ.get("DOWNLOADS_DIR") or Path(tempfile.gettempdir(), "brubeck-downloads"))
SECRET = os.environ.get("DOWNLOADS_SECRET", "change me: a long random string")


class LoginHandler(WebMessageHandler):
    def post(self):
        self.set_cookie("user", self.get_argument("user"), secret=SECRET, httponly=True)
        return "logged in\n"


class LoggedInHandler(WebMessageHandler):
    timeout = 3600  # a download runs as long as the client takes: one hour at most

    def prepare(self):
        if self.get_cookie("user", secret=SECRET) is None:
            raise HTTPError(403, "log in first")


class FileHandler(LoggedInHandler):
    """A shared file; any name that leads out of SHARED is a 404."""

    async def get(self, name):
        self.set_header("Cache-Control", "private, no-cache")  # revalidate: cheap with a 304
        return await self.send_file(name, root=SHARED)


class ExportHandler(LoggedInHandler):
    """The same files as attachments, under a name chosen for the user."""

    async def get(self, name):
        stem, dot, ext = name.rpartition(".")
        return await self.send_file(name, root=SHARED, download_name=f"{stem} 2026{dot}{ext}")


def make_samples(directory: Path) -> None:
    """A small text file and one large enough to be streamed, unless they exist."""
    samples = {
        "report.csv": "".join(f"{n},item {n},{n * 3}\n" for n in range(1000)).encode(),
        "big.bin": os.urandom(3_000_000),
    }
    for name, data in samples.items():
        if not (directory / name).exists():
            # Written aside, then renamed: another worker never sees half a file.
            scratch = directory / f".{name}.{os.getpid()}"
            scratch.write_bytes(data)
            scratch.replace(directory / name)


SHARED.mkdir(parents=True, exist_ok=True)
make_samples(SHARED)

app = Brubeck(
    msg_conn=Mongrel2Connection("tcp://127.0.0.1:9999", "tcp://127.0.0.1:9998"),
    handler_tuples=[
        (r"^/login$", LoginHandler),
        (r"^/files/(?P<name>.+)$", FileHandler),
        (r"^/export/(?P<name>.+)$", ExportHandler),
    ],
)

if __name__ == "__main__":
    app.run()
