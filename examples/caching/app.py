"""Caching-friendly answers: revalidation with ETag and Last-Modified (304), and gzip.

brubeck run examples/caching/app.py:app --mongrel2
curl -i --compressed http://127.0.0.1:6767/notes            # gzip, with an ETag
curl -i -H 'If-None-Match: <that ETag>' --compressed http://127.0.0.1:6767/notes   # 304
curl -i http://127.0.0.1:6767/notes/1                       # Last-Modified, then revalidate
curl -i -X PUT -d text=changed http://127.0.0.1:6767/notes/1
curl -i -X PUT -H 'If-Match: "note-1-v1"' -d text=again http://127.0.0.1:6767/notes/1   # 412
"""

from datetime import UTC, datetime

from brubeck import Brubeck, HTTPError, JSONMessageHandler, Mongrel2Connection


class Note:
    def __init__(self, text: str) -> None:
        self.text = text
        self.version = 1
        self.updated = datetime.now(UTC).replace(microsecond=0)

    def edit(self, text: str) -> None:
        self.text = text
        self.version += 1
        self.updated = datetime.now(UTC).replace(microsecond=0)


class NotesHandler(JSONMessageHandler):
    """The whole list: the app computes its ETag (setting ``etag``) after building it."""

    def get(self):
        notes = self.application.state.notes
        self.set_header("Cache-Control", "no-cache")  # keep it, but ask before each use
        return {"notes": [{"id": n, "text": note.text} for n, note in notes.items()]}


class NoteHandler(JSONMessageHandler):
    """One note: its version is known up front, so a current client costs no work at all."""

    def _note(self, note_id: str) -> Note:
        note = self.application.state.notes.get(int(note_id))
        if note is None:
            raise HTTPError(404, f"no note {note_id}")
        return note

    def get(self, note_id):
        note = self._note(note_id)
        tag = _tag(note_id, note)
        self.set_header("ETag", tag)
        self.set_header("Last-Modified", note.updated)
        self.set_header("Cache-Control", "no-cache")
        if self.request.is_fresh(tag, note.updated):
            return self.render(304)
        return {"id": int(note_id), "text": note.text, "version": note.version}

    def put(self, note_id):
        note = self._note(note_id)
        # A client that sends If-Match with the tag it read gets a 412 if someone else edited
        # the note since: no update is lost (optimistic locking).
        self.request.check_preconditions(_tag(note_id, note), note.updated)
        note.edit(self.get_argument("text"))
        self.set_header("ETag", _tag(note_id, note))
        return {"id": int(note_id), "version": note.version}


def _tag(note_id: str, note: Note) -> str:
    return f'"note-{note_id}-v{note.version}"'


app = Brubeck(
    msg_conn=Mongrel2Connection("tcp://127.0.0.1:9999", "tcp://127.0.0.1:9998"),
    handler_tuples=[(r"^/notes$", NotesHandler), (r"^/notes/(?P<note_id>\d+)$", NoteHandler)],
    etag=True,  # a computed ETag on every 200 answer to GET that has none
    compress_response=True,  # gzip for clients that accept it (text-like bodies >= 1 KiB)
)
app.state.notes = {n: Note(f"note number {n}: " + "some text " * 20) for n in range(1, 21)}

if __name__ == "__main__":
    app.run()
