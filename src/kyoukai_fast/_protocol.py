"""Selector: the compiled ``_protocol_c`` when available, else the pure-Python ``_protocol_py``."""
from ._implementation import USE_EXTENSIONS
from ._protocol_py import KyoukaiProtocol as KyoukaiProtocolPy

KyoukaiProtocolC = None
if USE_EXTENSIONS:
    try:
        from ._protocol_c import KyoukaiProtocol as KyoukaiProtocolC
    except ImportError:  # no compiled build
        KyoukaiProtocolC = None

#: The live implementation.
KyoukaiProtocol = KyoukaiProtocolC if KyoukaiProtocolC is not None else KyoukaiProtocolPy
IMPLEMENTATION = "cython" if KyoukaiProtocolC is not None else "python"

__all__ = ("KyoukaiProtocol", "KyoukaiProtocolPy", "KyoukaiProtocolC", "IMPLEMENTATION")
