"""Static files with versioned URLs: the browser keeps them until their content changes.

brubeck run examples/assets/app.py:app --mongrel2
curl -s http://127.0.0.1:6767/                        # the page links /static/css/site.css?v=...
curl -si 'http://127.0.0.1:6767/static/css/site.css?v=<from the page>'   # immutable, a year
curl -si 'http://127.0.0.1:6767/static/css/site.css?v=stale'            # no-cache
curl -si http://127.0.0.1:6767/static/css/site.css    # no Cache-Control: revalidated by ETag
curl -si http://127.0.0.1:6767/guide                  # 301 to /guide/
curl -s http://127.0.0.1:6767/guide/                  # guide/index.html
curl -si --compressed http://127.0.0.1:6767/guide/   # Content-Encoding: gzip: over 1 KiB
curl -si --path-as-is http://127.0.0.1:6767/static/../app.py   # 404: names stay inside

Edit static/css/site.css and load the page again: its link, and so the cached copy, changes.
"""

from pathlib import Path

from brubeck import Brubeck, Mongrel2Connection, StaticFileHandler, WebMessageHandler

HERE = Path(__file__).resolve().parent


class HomeHandler(WebMessageHandler):
    def get(self):
        return (
            "<!doctype html>\n<html><head><title>Assets</title>\n"
            f'<link rel="stylesheet" href="{self.static_url("css/site.css")}">\n'
            f'<script src="{self.static_url("js/site.js")}" defer></script>\n'
            '</head><body><h1>Assets</h1><p><a href="/guide/">The guide</a></p></body></html>\n'
        )


app = Brubeck(
    msg_conn=Mongrel2Connection("tcp://127.0.0.1:9999", "tcp://127.0.0.1:9998"),
    handler_tuples=[
        (r"^/$", HomeHandler),
        # A second directory with its own rules: an index page, revalidated on every visit.
        (
            r"^/guide(/.*)?$",
            StaticFileHandler,
            {"root": HERE / "guide", "default_filename": "index.html", "cache_control": "no-cache"},
        ),
    ],
    static_path=HERE / "static",  # served at /static/, and named by static_url
    compress_response=True,  # text of compress_min_size (1 KiB) or more goes gzipped
)

if __name__ == "__main__":
    app.run()
