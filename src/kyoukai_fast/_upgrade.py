"""
Handing a connection over to Kyoukai's HTTP/2 protocol, shared by both implementations.

Two ways in: a TLS connection that negotiated ALPN ``h2``, and a cleartext HTTP/1.1 request with
``Upgrade: h2c`` (RFC 7540 3.2). The new protocol object takes over the transport through
``transport.set_protocol``; the HTTP/1.1 protocol object is simply dropped.
"""
from __future__ import annotations

import base64
import binascii

from ._errors import logger

__all__ = ("h2_protocol_class", "hand_over_tls", "hand_over_h2c", "SWITCHING_PROTOCOLS")

SWITCHING_PROTOCOLS = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"

_h2_class = None
_h2_checked = False


def h2_protocol_class():
    """Kyoukai's ``H2KyoukaiProtocol`` when Kyoukai and h2 are importable, else ``None``."""
    global _h2_class, _h2_checked
    if not _h2_checked:
        _h2_checked = True
        try:
            from kyoukai.backends.http2 import H2KyoukaiProtocol
        except Exception:  # ImportError, or Kyoukai failing on this Python
            H2KyoukaiProtocol = None
        _h2_class = H2KyoukaiProtocol
    return _h2_class


def hand_over_tls(protocol, transport) -> bool:
    """Switch a TLS connection that negotiated ``h2`` to HTTP/2. False if unavailable."""
    cls = h2_protocol_class()
    if cls is None:
        return False
    new = cls(protocol.component, protocol.parent_context)
    transport.set_protocol(new)
    new.connection_made(transport)
    return True


def decode_http2_settings(value: str) -> bytes | None:
    """The SETTINGS payload of an ``HTTP2-Settings`` header (base64url, padding optional)."""
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return None


def hand_over_h2c(protocol, transport, environ: dict, body: bytes) -> bool:
    """Answer ``101`` and continue the connection as HTTP/2, the upgrading request on stream 1.

    Returns False (nothing written) when h2 is unavailable or the request is not a valid h2c
    upgrade; the caller then refuses it.
    """
    cls = h2_protocol_class()
    settings = environ.get("HTTP_HTTP2_SETTINGS")
    if cls is None or settings is None:
        return False
    payload = decode_http2_settings(settings)
    if payload is None:
        return False
    try:
        from h2.events import RequestReceived
    except ImportError:  # pragma: no cover - h2 is a dependency of H2KyoukaiProtocol
        return False
    new = cls(protocol.component, protocol.parent_context)
    new.transport = transport
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        new.ip, new.client_port = peer[0], peer[1]
    try:
        new.conn.initiate_upgrade_connection(payload)
    except Exception:
        logger.info("Refusing h2c upgrade with invalid HTTP2-Settings", exc_info=True)
        return False
    transport.write(SWITCHING_PROTOCOLS)
    transport.write(new.conn.data_to_send())
    transport.set_protocol(new)
    logger.debug("Upgraded connection to HTTP/2 (h2c)")
    # The request that carried the upgrade is answered as stream 1 of the new connection.
    path = environ.get("RAW_URI") or "/"
    headers = [
        (":method", environ.get("REQUEST_METHOD", "GET")),
        (":path", path),
        (":scheme", "http"),
        (":authority", environ.get("HTTP_HOST", environ.get("SERVER_NAME", ""))),
    ]
    event = RequestReceived()
    event.stream_id = 1
    event.headers = headers
    handler = getattr(new, "request_received", None)
    if handler is not None:
        try:
            handler(event)
            if body:
                new.receive_data  # noqa: B018 - body of an h2c upgrade request is unsupported
            end = getattr(new, "stream_complete", None)
            if end is not None:
                end(1)
        except Exception:
            logger.exception("HTTP/2 protocol failed to take over the upgraded request")
    return True
