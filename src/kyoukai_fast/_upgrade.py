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

__all__ = ("after_upgrade", "h2_protocol_class", "hand_over_tls", "hand_over_h2c",
           "UpgradeBody", "SWITCHING_PROTOCOLS", "upgrade_refusal")

SWITCHING_PROTOCOLS = (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                       b"Upgrade: h2c\r\n\r\n")

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


def after_upgrade(data, upgrade: BaseException) -> bytes:
    """The bytes of ``data`` after the request that ``httptools.HttpParserUpgrade`` stopped at."""
    offset = upgrade.args[0] if upgrade.args and isinstance(upgrade.args[0], int) else len(data)
    return bytes(data[offset:])


def upgrade_refusal(environ: dict | None):
    """The HTTP error for a request llhttp stopped at as an upgrade that is not taken.

    ``CONNECT`` (which llhttp reports as an upgrade) asks for a tunnel: this is an origin server,
    not a proxy, so that is not implemented (501). Any other upgrade (websocket, or an h2c one
    that cannot be done) is refused with 400.
    """
    from werkzeug.exceptions import BadRequest, NotImplemented as HTTPNotImplemented

    if environ is not None and environ.get("REQUEST_METHOD") == "CONNECT":
        return HTTPNotImplemented("CONNECT is not supported: this server is not a proxy.")
    return BadRequest("Unsupported protocol upgrade.")


class UpgradeBody:
    """The body of an ``Upgrade: h2c`` request, collected before the switch.

    llhttp stops right after the head of a request that asks for an upgrade, even when the head
    announces a body: the body bytes come back as "after the upgrade". RFC 9113 3.2 sends that
    body as HTTP/1.1 before the switch, so it is collected here (possibly over several reads)
    and split from the HTTP/2 bytes that follow it.
    """

    __slots__ = ("environ", "length", "data")

    def __init__(self, environ: dict, limit: int):
        """:raises HTTPException: the body cannot be taken (chunked, bad length, too large)."""
        from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

        if "chunked" in (environ.get("HTTP_TRANSFER_ENCODING") or "").lower():
            raise BadRequest("A chunked request cannot be upgraded.")
        length = (environ.get("CONTENT_LENGTH") or "0").strip()
        if not length.isdigit():
            raise BadRequest("Invalid Content-Length.")
        self.environ = environ
        self.length = int(length)
        if self.length > limit:
            raise RequestEntityTooLarge()
        self.data = bytearray()

    def feed(self, data) -> tuple | None:
        """Add received bytes: ``(body, rest)`` once the body is complete, else ``None``."""
        self.data += data
        if len(self.data) < self.length:
            return None
        return bytes(self.data[:self.length]), bytes(self.data[self.length:])


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


# Request headers that belong to the HTTP/1.1 connection and have no place in an HTTP/2 request
# (RFC 9113 8.2.2); Host becomes the ``:authority`` pseudo-header.
_HOP_BY_HOP = frozenset(("HTTP_CONNECTION", "HTTP_UPGRADE", "HTTP_HTTP2_SETTINGS", "HTTP_HOST",
                         "HTTP_KEEP_ALIVE", "HTTP_PROXY_CONNECTION", "HTTP_TRANSFER_ENCODING",
                         "HTTP_TE"))


def _stream_one_headers(environ: dict) -> list:
    """The HTTP/2 header list of the request that carried the upgrade (it becomes stream 1)."""
    headers = [
        (":method", environ.get("REQUEST_METHOD", "GET")),
        (":path", environ.get("RAW_URI") or "/"),
        (":scheme", "http"),
        (":authority", environ.get("HTTP_HOST") or environ.get("SERVER_NAME") or ""),
    ]
    for key, value in environ.items():
        if key in _HOP_BY_HOP or not isinstance(value, str):
            continue
        if key.startswith("HTTP_"):
            name = key[5:]
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            name = key
        else:
            continue
        headers.append((name.lower().replace("_", "-"), value))
    return headers


def _answer_stream_one(new, environ: dict, body: bytes) -> None:
    """Feed the upgrading request to ``new`` exactly as if it had arrived on stream 1.

    ``H2KyoukaiProtocol.request_received`` makes the per-stream state (``H2State``) and starts
    the app and the sending loop; the body and its end go into that state the way its
    ``DataReceived`` / ``StreamEnded`` handlers put them there.
    """
    from h2.events import DataReceived, RequestReceived, StreamEnded

    new.request_received(_h2_event(RequestReceived, stream_id=1,
                                   headers=_stream_one_headers(environ)))
    if body:
        # Sent before HTTP/2 began, so it used no flow-control window.
        new.receive_data(_h2_event(DataReceived, stream_id=1, data=body,
                                   flow_controlled_length=0))
    new.stream_complete(_h2_event(StreamEnded, stream_id=1))


def _h2_event(cls, **fields):
    """An h2 event object: keyword construction (h2 4.x) or attributes set afterwards (3.x)."""
    try:
        return cls(**fields)
    except TypeError:
        event = cls()
        for name, value in fields.items():
            setattr(event, name, value)
        return event


def hand_over_h2c(protocol, transport, environ: dict, body: bytes, rest: bytes = b"") -> bool:
    """Answer ``101`` and continue the connection as HTTP/2, the upgrading request on stream 1.

    ``rest`` is what the client sent after the upgrading request (normally the start of its
    connection preface); it goes to the new protocol. Returns False (nothing written) when h2 is
    unavailable or the request is not a valid h2c upgrade; the caller then refuses it.
    """
    cls = h2_protocol_class()
    settings = environ.get("HTTP_HTTP2_SETTINGS")
    if cls is None or settings is None or "," in settings:
        return False  # RFC 9113 3.2.1: exactly one HTTP2-Settings field
    settings = settings.strip()
    if decode_http2_settings(settings) is None:
        return False
    new = cls(protocol.component, protocol.parent_context)
    try:
        # h2 wants the header value itself (base64url); clients may leave out the padding.
        new.conn.initiate_upgrade_connection((settings + "=" * (-len(settings) % 4)).encode())
    except Exception:
        logger.info("Refusing h2c upgrade with invalid HTTP2-Settings", exc_info=True)
        return False
    # Not ``connection_made``: that would start a second connection preface.
    new.transport = transport
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        new.ip, new.client_port = peer[0], peer[1]
    transport.write(SWITCHING_PROTOCOLS)
    transport.write(new.conn.data_to_send())
    transport.set_protocol(new)
    logger.debug("Upgraded connection to HTTP/2 (h2c)")
    try:
        _answer_stream_one(new, environ, body)
    except Exception:
        logger.exception("HTTP/2 protocol failed to take over the upgraded request")
        new.close(0x2)  # INTERNAL_ERROR
        return True
    if rest:
        new.data_received(rest)
    return True
