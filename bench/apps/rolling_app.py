"""The app bench/rolling_restart.py restarts under load: a quick answer and a 5 ms await.

python -m brubeck run bench/apps/rolling_app.py:app --pull ADDR --pub ADDR --workers 2
"""

import asyncio
import os

from brubeck import Brubeck, WebMessageHandler


class Quick(WebMessageHandler):
    def get(self):
        return str(os.getpid())


class Awaits(WebMessageHandler):
    async def get(self):
        await asyncio.sleep(0.005)
        return str(os.getpid())


app = Brubeck(handler_tuples=[(r"^/quick$", Quick), (r"^/awaits$", Awaits)])
