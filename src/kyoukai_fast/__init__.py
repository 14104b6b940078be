"""
kyoukai_fast: a Cython-compiled HTTP/1.1 backend for the Kyoukai web framework.

Use it by module path, exactly like Kyoukai's own backend::

    KyoukaiComponent(app, "127.0.0.1", 4444, backend="kyoukai_fast")

``IMPLEMENTATION`` says which implementation is live: ``"cython"`` (the compiled extension) or
``"python"`` (the pure-Python fallback, forced by ``KYOUKAI_FAST_NO_EXTENSIONS=1``).

``HTTP2_ENGINE`` says which HTTP/2 engine serves HTTP/2 connections: ``"nghttp2"`` (libnghttp2,
with the compiled implementation when it was built with libnghttp2), ``"h2"`` (the pure-Python
h2 package) or ``None`` (neither is available: no HTTP/2).

``StreamingBody(iterable)`` makes a route's response body stream as it is produced (Kyoukai
itself would turn a generator body into its ``str()``).
"""
from io import BytesIO

from werkzeug.exceptions import BadRequest, InternalServerError, MethodNotAllowed
from werkzeug.wrappers import Request, Response

from ._config import ProtocolConfig
from ._protocol import IMPLEMENTATION, KyoukaiProtocol, KyoukaiProtocolC, KyoukaiProtocolPy
from ._settings import SettingError
from ._shutdown import graceful_shutdown
from ._streaming import StreamingBody
from ._wsgi import get_formatted_response, to_wsgi_environment


def __getattr__(name):
    # Imported on first use: Kyoukai and Asphalt are heavy, and optional for the package itself.
    if name == "Context":
        try:
            from asphalt.core import Context
        except Exception:
            Context = None
        globals()["Context"] = Context
        return Context
    if name == "HTTP2_ENGINE":
        from ._upgrade import http2_protocol_class

        cls = http2_protocol_class()
        globals()["HTTP2_ENGINE"] = engine = None if cls is None else cls.engine_class.name
        return engine
    if name == "H2KyoukaiProtocol":
        from ._upgrade import h2_protocol_class

        globals()["H2KyoukaiProtocol"] = cls = h2_protocol_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__version__ = "0.1.0"

#: The attribute Kyoukai's component reads to find the protocol class of a backend module.
PROTOCOL_CLASS = "KyoukaiProtocol"

__all__ = (
    "PROTOCOL_CLASS",
    "IMPLEMENTATION",
    "HTTP2_ENGINE",
    "KyoukaiProtocol",
    "KyoukaiProtocolC",
    "KyoukaiProtocolPy",
    "ProtocolConfig",
    "SettingError",
    "graceful_shutdown",
    "StreamingBody",
    "to_wsgi_environment",
    "get_formatted_response",
    "BytesIO",
    "Context",
    "H2KyoukaiProtocol",
    "Request",
    "Response",
    "BadRequest",
    "InternalServerError",
    "MethodNotAllowed",
    "__version__",
)
