"""Long-polling chat feed: clients wait on /poll; a POST to /say releases all of them at once.

brubeck run examples/longpolling/app.py:app --mongrel2
curl http://127.0.0.1:6767/poll            # in a few terminals: they wait
curl -d text=hello http://127.0.0.1:6767/say
"""

from brubeck import Brubeck, Mongrel2Connection, Response, WebMessageHandler
from brubeck.waiting import WaitingRoom


class Poll(WebMessageHandler):
    async def get(self):
        return await self.application.state.room.wait(self.request, timeout=30)


class Say(WebMessageHandler):
    def post(self):
        text = self.get_argument("text")
        released = self.application.state.room.release(Response({"message": text}))
        return {"released": released}


app = Brubeck(
    msg_conn=Mongrel2Connection("tcp://127.0.0.1:9999", "tcp://127.0.0.1:9998"),
    handler_tuples=[(r"^/poll$", Poll), (r"^/say$", Say)],
)
app.state.room = WaitingRoom(app)

if __name__ == "__main__":
    app.run()
