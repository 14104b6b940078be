"""
Selector of the HTTP/2 engine: libnghttp2's (``_http2_nghttp2``, compiled) when the compiled
implementation is live and that module was built, else h2's (``_http2_h2``, pure Python).
``ENGINE_NAME`` says which one is live.
"""
from ._implementation import USE_EXTENSIONS

__all__ = ("ENGINE", "ENGINE_NAME", "Nghttp2Engine", "H2Engine", "h2_engine")

Nghttp2Engine = None
if USE_EXTENSIONS:
    try:
        from ._http2_nghttp2 import Nghttp2Engine
    except ImportError:  # not built (no libnghttp2 at build time), or its library is missing
        Nghttp2Engine = None


def h2_engine():
    """h2's engine class; ImportError when h2 is not installed."""
    from ._http2_h2 import H2Engine

    return H2Engine


try:
    H2Engine = h2_engine()
except ImportError:
    H2Engine = None

#: The engine class HTTP2Protocol uses by default.
ENGINE = Nghttp2Engine if Nghttp2Engine is not None else H2Engine
if ENGINE is None:
    raise ImportError("HTTP/2 needs h2 (pip install h2) or kyoukai_fast's compiled "
                      "libnghttp2 engine")
ENGINE_NAME = ENGINE.name
