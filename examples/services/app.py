"""A Brubeck app that answers HTTP with a service written in any language.

The app runs the Majordomo broker itself (an ``on_startup`` hook) and asks the ``upper``
service for each ``GET /upper?text=...``; examples/services/upper_worker.c (or any MDP worker
registered for ``upper``) does the work. With no worker, the answer is a 503 within the
client's timeout.

    brubeck run examples/services/app.py:app --mongrel2
    gcc -O2 -o /tmp/upper_worker examples/services/upper_worker.c -lzmq
    /tmp/upper_worker tcp://127.0.0.1:5555
    curl 'http://127.0.0.1:6767/upper?text=hello'
"""

from brubeck import Brubeck, HTTPError, Mongrel2Connection, WebMessageHandler
from brubeck.services import Broker, ServiceClient, ServiceUnavailable

BROKER_ADDRESS = "tcp://127.0.0.1:5555"


class UpperHandler(WebMessageHandler):
    async def get(self):
        client: ServiceClient = self.application.state.services
        try:
            answer = await client.request("upper", self.get_argument("text"))
        except ServiceUnavailable as exc:
            raise HTTPError(503, str(exc), {"Retry-After": "1"}) from None
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_body(answer)
        return self.render()


def make_app(broker_address: str = BROKER_ADDRESS, msg_conn=None, timeout=2.0) -> Brubeck:
    app = Brubeck(msg_conn=msg_conn, handler_tuples=[(r"^/upper$", UpperHandler)])
    broker = Broker(broker_address)

    @app.on_startup
    async def start_services():
        await broker.start()
        app.state.broker = broker
        app.state.services = ServiceClient(broker.address, timeout=timeout)

    @app.on_shutdown
    async def stop_services():
        await app.state.services.close()
        await broker.stop()

    return app


app = make_app(msg_conn=Mongrel2Connection("tcp://127.0.0.1:9999", "tcp://127.0.0.1:9998"))

if __name__ == "__main__":
    app.run()
