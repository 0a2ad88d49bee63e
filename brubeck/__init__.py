"""Brubeck: an asyncio web framework for Mongrel2's ZeroMQ handler protocol.

The public API is what ``__all__`` lists; everything else may change between releases.
"""

from .app import Brubeck
from .connection import Mongrel2Connection
from .errors import HTTPError
from .handlers import JSONMessageHandler, MessageHandler, WebMessageHandler, render
from .multipart import UploadedFile
from .protocol import Message, ProtocolError
from .request import Headers, Request
from .response import Response
from .routing import Route, Router
from .static import StaticFileHandler
from .websocket import WebSocketHandler

__version__ = "0.1.0"

__all__ = [
    "Brubeck",
    "HTTPError",
    "Headers",
    "JSONMessageHandler",
    "Message",
    "MessageHandler",
    "Mongrel2Connection",
    "ProtocolError",
    "Request",
    "Response",
    "Route",
    "Router",
    "StaticFileHandler",
    "UploadedFile",
    "WebMessageHandler",
    "WebSocketHandler",
    "__version__",
    "render",
]
