"""
Handing a connection over to kyoukai_fast's HTTP/2 protocol, shared by both implementations.

Three ways in: a TLS connection that negotiated ALPN ``h2``, a cleartext HTTP/1.1 request with
``Upgrade: h2c`` (RFC 7540 3.2), and a cleartext connection that starts with the HTTP/2
connection preface (prior knowledge, RFC 9113 3.3). The HTTP/1.1 protocol object sees each in
its cold path; the HTTP/2 protocol (``_http2``) takes over the transport through
``transport.set_protocol`` and the HTTP/1.1 object is simply dropped.
"""
from __future__ import annotations

import base64
import binascii

from ._errors import logger

__all__ = ("after_upgrade", "h2_protocol_class", "http2_protocol_class", "http2_enabled",
           "hand_over_tls", "hand_over_h2c", "hand_over_preface", "is_preface_error",
           "UpgradeBody", "SWITCHING_PROTOCOLS", "upgrade_refusal")

SWITCHING_PROTOCOLS = (b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                       b"Upgrade: h2c\r\n\r\n")

_h2_class = None
_h2_checked = False
_http2_class = None
_http2_checked = False


def h2_protocol_class():
    """Kyoukai's own ``H2KyoukaiProtocol`` when Kyoukai and h2 are importable, else ``None``.

    Kept importable (``kyoukai_fast.H2KyoukaiProtocol``, the stock backend's name); kyoukai_fast
    serves HTTP/2 with its own protocol, :func:`http2_protocol_class`.
    """
    global _h2_class, _h2_checked
    if not _h2_checked:
        _h2_checked = True
        try:
            from kyoukai.backends.http2 import H2KyoukaiProtocol
        except Exception:  # ImportError, or Kyoukai failing on this Python
            H2KyoukaiProtocol = None
        _h2_class = H2KyoukaiProtocol
    return _h2_class


def http2_protocol_class():
    """kyoukai_fast's ``HTTP2Protocol`` when the h2 engine is importable, else ``None``."""
    global _http2_class, _http2_checked
    if not _http2_checked:
        _http2_checked = True
        try:
            from ._http2 import HTTP2Protocol
        except ImportError:
            HTTP2Protocol = None
        _http2_class = HTTP2Protocol
    return _http2_class


def http2_enabled(protocol) -> bool:
    """Whether ``protocol``'s server serves HTTP/2 (the ``http2`` setting, and h2 installed)."""
    from ._config import server_state_for

    config = server_state_for(protocol.component, protocol.server_port).config
    return config.http2 and http2_protocol_class() is not None


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
    from werkzeug.exceptions import BadRequest
    from werkzeug.exceptions import NotImplemented as HTTPNotImplemented

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

    __slots__ = ("environ", "length", "data", "request", "http2")

    def __init__(self, environ: dict, limit: int, request=None, http2: bool = True):
        """``request``: the HTTP/1.1 protocol's state of the upgrading request, served as a plain
        HTTP/1.1 request once its body is in when ``http2`` is off (the upgrade is ignored).

        :raises HTTPException: the body cannot be taken (chunked, bad length, too large).
        """
        self.request = request
        self.http2 = http2
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
    """Switch a TLS connection that negotiated ``h2`` to HTTP/2.

    False when HTTP/2 is off or unavailable: the connection is then closed, since its client
    speaks HTTP/2 (only a TLS context of the user's own, offering ``h2`` regardless of the
    ``http2`` setting, can get there).
    """
    if not http2_enabled(protocol):
        logger.warning("TLS client negotiated h2 but HTTP/2 is off: closing the connection")
        transport.close()
        return True
    new = http2_protocol_class().from_http1(protocol, "https")
    transport.set_protocol(new)
    new.connection_made(transport)
    return True


def is_preface_error(exc: BaseException, idle: bool, parser) -> bool:
    """Whether a parser error is llhttp stopping at the HTTP/2 connection preface.

    llhttp parses any ``PRI`` request line and then pauses ("PRI/Upgrade"); only the preface's
    own ``PRI * HTTP/2.0`` is HTTP/2 (``parser`` read its version), so ``PRI * HTTP/1.0`` is
    refused as HTTP/1.1. Only a connection with nothing else in progress (``idle``) is handed
    over: the preface comes first.
    """
    return idle and "PRI" in str(exc) and parser.get_http_version() == "2.0"


def preface_bytes(data: bytes) -> bytes:
    """The connection's bytes from its start, given the read in which llhttp found the preface.

    llhttp stops in the read that completes ``PRI * HTTP/2.0\r\n\r\n`` (18 bytes); earlier
    reads held a start of the preface, which the HTTP/2 engine needs too.
    """
    from ._http2 import PREFACE

    for start in range(19):
        tail = PREFACE[start:]
        if data[:len(tail)] == tail[:len(data)]:
            return PREFACE[:start] + bytes(data)
    return bytes(data)


def hand_over_preface(protocol, transport, data: bytes) -> bool:
    """Continue a cleartext connection that sent the HTTP/2 preface as HTTP/2. False when
    HTTP/2 is off or unavailable (the caller answers 400 as before)."""
    if not http2_enabled(protocol):
        return False
    new = http2_protocol_class().from_http1(protocol, "http")
    transport.set_protocol(new)
    # One connection, counted once (limit_concurrency) while the new protocol takes over.
    protocol._server.remove_connection(protocol)
    logger.debug("Connection preface: serving HTTP/2 (prior knowledge)")
    new.take_over_preface(transport, preface_bytes(data))
    return True


def decode_http2_settings(value: str) -> bytes | None:
    """The SETTINGS payload of an ``HTTP2-Settings`` header (base64url, padding optional)."""
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return None


def hand_over_h2c(protocol, transport, environ: dict, body: bytes, rest: bytes = b"") -> bool:
    """Answer ``101`` and continue the connection as HTTP/2, the upgrading request on stream 1.

    ``rest`` is what the client sent after the upgrading request (normally the start of its
    connection preface); it goes to the new protocol. Returns False (nothing written) when
    HTTP/2 is unavailable or the request is not a valid h2c upgrade; the caller then refuses it.
    """
    settings = environ.get("HTTP_HTTP2_SETTINGS")
    if http2_protocol_class() is None or settings is None or "," in settings:
        return False  # RFC 9113 3.2.1: exactly one HTTP2-Settings field
    settings = settings.strip()
    if decode_http2_settings(settings) is None:
        return False
    new = http2_protocol_class().from_http1(protocol, "http")
    # h2 wants the header value itself (base64url); clients may leave out the padding.
    if not new.accept_upgrade(settings + "=" * (-len(settings) % 4)):
        return False
    transport.set_protocol(new)
    protocol._server.remove_connection(protocol)  # counted once, as above
    new.take_over_upgrade(transport, environ, body, rest, SWITCHING_PROTOCOLS)
    logger.debug("Upgraded connection to HTTP/2 (h2c)")
    return True
