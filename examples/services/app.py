"""A Brubeck app that answers HTTP with a service written in any language.

The app runs the Majordomo broker itself (an ``on_startup`` hook) and asks the ``upper``
service for each ``GET /upper?text=...``; examples/services/upper_worker.c (or any MDP worker
registered for ``upper``) does the work. With no worker, the answer is a 503 within the
client's timeout.

    brubeck run examples/services/app.py:app --mongrel2
    gcc -O2 -o /tmp/upper_worker examples/services/upper_worker.c -lzmq
    /tmp/upper_worker tcp://127.0.0.1:5555
    curl 'http://127.0.0.1:6767/upper?text=hello'

Only one process can bind the broker's address, so a broker inside the app allows one app
process. For several (``--workers 2``), run the broker on its own and name it in
SERVICES_BROKER: each process then only connects to it.

    python -m brubeck.services.broker tcp://127.0.0.1:5555 &
    export SERVICES_BROKER=tcp://127.0.0.1:5555
    brubeck run examples/services/app.py:app --mongrel2 --workers 2
"""

import os

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


def make_app(
    broker_address: str = BROKER_ADDRESS, msg_conn=None, timeout=2.0, run_broker=True
) -> Brubeck:
    """The app; with ``run_broker=False`` it connects to a broker running elsewhere."""
    app = Brubeck(msg_conn=msg_conn, handler_tuples=[(r"^/upper$", UpperHandler)])
    broker = Broker(broker_address) if run_broker else None

    @app.on_startup
    async def start_services():
        address = broker_address
        if broker is not None:
            await broker.start()
            app.state.broker = broker
            address = broker.address  # the port chosen, for "tcp://127.0.0.1:*"
        app.state.services = ServiceClient(address, timeout=timeout)

    @app.on_shutdown
    async def stop_services():
        await app.state.services.close()
        if broker is not None:
            await broker.stop()

    return app


EXTERNAL_BROKER = os.environ.get("SERVICES_BROKER")
app = make_app(
    EXTERNAL_BROKER or BROKER_ADDRESS,
    msg_conn=Mongrel2Connection("tcp://127.0.0.1:9999", "tcp://127.0.0.1:9998"),
    run_broker=not EXTERNAL_BROKER,
)

if __name__ == "__main__":
    app.run()
