"""
Per-server settings and state, shared by both protocol implementations.

A Kyoukai component builds one protocol object per connection; everything that is the same for
every connection of a component (limits, timeouts, the constant part of the WSGI environ, the set
of live connections for graceful shutdown) lives once in a :class:`ServerState`, found through
:func:`server_state_for`. That keeps an idle connection small and the per-request work short.

Settings are read from the component's configuration (the keyword arguments of
``KyoukaiComponent(...)`` or the Asphalt YAML block), under the names of :class:`ProtocolConfig`.
"""
from __future__ import annotations

import dataclasses
import time
import weakref
from dataclasses import field
from typing import Any

from ._environ import ENVIRON_BASE
from ._pipeline import pipeline_disabled_by_env, request_handler
from ._request_hooks import request_hooks
from ._settings import SettingError, check_unknown, convert, limit, port_number

__all__ = ("ProtocolConfig", "ServerState", "server_state_for", "existing_server_state",
           "SettingError", "validate_component", "serves_with_kyoukai_fast")

@dataclasses.dataclass
class ProtocolConfig:
    """Limits and timeouts of the HTTP/1.1 and HTTP/2 protocols, and the per-request features.

    A field is a setting: its annotation and ``limit(...)`` metadata say what values it takes
    (numbers: at least 0 unless ``limit`` says otherwise), checked by :mod:`._settings` for
    every source of settings, and the ``#:`` comment above it is its command-line help.
    """

    #: Largest request body accepted, after any ``Content-Encoding`` is decoded (413 beyond).
    max_body_size: int = 12 * 1024 * 1024
    #: Longest request target (URL) accepted (414 beyond).
    max_url_size: int = field(default=8190, metadata=limit(1))
    #: Most header fields in one request (431 beyond).
    max_header_count: int = field(default=100, metadata=limit(1, 2 ** 31 - 1))
    #: Largest single header field, name plus value (431 beyond).
    max_header_size: int = field(default=8190, metadata=limit(1))
    #: Largest request head arriving over several reads, counted after the read it began in
    #: (431 beyond). httptools buffers an incomplete header field whole, so without this a
    #: client could grow one field for as long as the header timeout lets it.
    max_head_size: int = field(default=64 * 1024, metadata=limit(1))
    #: Seconds an idle keep-alive connection is kept open.
    keepalive_timeout: float = 5.0
    #: Seconds a client has to send a complete request head once it started one (slowloris).
    header_timeout: float = field(default=10.0, metadata=limit(above=0))
    #: Parsed requests waiting behind the running one before reading from the client pauses.
    max_pipelined_requests: int = field(default=16, metadata=limit(1))
    #: Transport write buffer high-water mark, in bytes (``pause_writing`` above it).
    write_high_water: int = 64 * 1024
    #: Seconds in-flight requests get to finish on graceful shutdown before being cancelled.
    shutdown_grace: float = 10.0
    #: Seconds a refused client may go on sending (read and discarded, the connection half
    #: closed) before the connection is closed; 0 closes at once.
    linger_timeout: float = 2.0
    #: Serve Kyoukai apps through kyoukai_fast's own request pipeline (stock behaviour, less
    #: work); off, or with KYOUKAI_FAST_NO_PIPELINE=1, the app's own process_request runs.
    fast_pipeline: bool = True
    #: Serve HTTP/2: ALPN ``h2`` on TLS, ``Upgrade: h2c`` and the HTTP/2 connection preface on
    #: cleartext. Off: ALPN offers only ``http/1.1`` and h2c upgrades are answered in HTTP/1.1.
    http2: bool = True
    #: Requests one HTTP/2 connection may have in flight (SETTINGS_MAX_CONCURRENT_STREAMS).
    http2_max_concurrent_streams: int = field(default=100, metadata=limit(1, 2 ** 31 - 1))
    #: Bytes of request body an HTTP/2 client may send on one stream before the server has taken
    #: them (the stream flow-control window, at most 2147483647).
    http2_stream_window: int = field(default=256 * 1024, metadata=limit(1, 2 ** 31 - 1))
    #: Bytes of request bodies an HTTP/2 client may send on a connection before the server has
    #: taken them (the connection flow-control window, at most 2147483647).
    http2_connection_window: int = field(default=1024 * 1024,
                                         metadata=limit(65535, 2 ** 31 - 1))
    #: Seconds an HTTP/2 response may wait for the client to take more of it (a flow-control
    #: window kept closed, a socket never read) before the connection is closed.
    http2_send_timeout: float = 30.0
    #: Honour proxy headers (Forwarded, X-Forwarded-For, X-Forwarded-Proto) from the peers
    #: forwarded_allow_ips trusts: they set REMOTE_ADDR and wsgi.url_scheme.
    proxy_headers: bool = True
    #: Peers trusted with proxy headers: comma-separated addresses or networks, or * for all.
    forwarded_allow_ips: str = "127.0.0.1"
    #: Path prefix the app is mounted under behind a proxy: it becomes SCRIPT_NAME, and is taken
    #: off PATH_INFO.
    root_path: str = ""
    #: Most connections served at once: a request on one more gets 503 (0: no limit).
    limit_concurrency: int = 0
    #: One line per request (the access log), written off the event loop.
    access_log: bool = False
    #: Access log line, in gunicorn's access_log_format atoms.
    access_log_format: str = '%(h)s - "%(r)s" %(s)s %(b)s %(L)ss'
    #: Where the access log goes: a file, appended to, or - for standard output.
    access_log_file: str = "-"

    def __post_init__(self):
        from ._access_log import check_destination, compile_format
        from ._proxy import TrustedProxies

        for setting in dataclasses.fields(self):
            setattr(self, setting.name, convert(setting.name, setting.type,
                                                getattr(self, setting.name), setting.metadata))
        TrustedProxies(self.forwarded_allow_ips)  # a bad address fails here, at start-up
        compile_format(self.access_log_format)
        check_destination(self.access_log_file)
        root = self.root_path.rstrip("/")
        if root and not root.startswith("/"):
            raise SettingError(f"invalid kyoukai_fast setting root_path={self.root_path!r}: "
                               "must start with '/'")
        self.root_path = root

    @classmethod
    def from_mapping(cls, cfg: dict[str, Any] | None) -> ProtocolConfig:
        """Build a config from a component's settings (``None`` values keep the default).

        An ``access_log_file`` other than ``-`` switches the access log on unless
        ``access_log`` is given too, as gunicorn's ``accesslog`` does.

        :raises SettingError: a bad value, or a key that looks like a misspelt setting name.
        """
        cfg = cfg or {}
        names = [f.name for f in dataclasses.fields(cls)]
        check_unknown(cfg, names, COMPONENT_KEYS)
        values = {name: cfg[name] for name in names if cfg.get(name) is not None}
        if values.get("access_log_file", "-") != "-":
            values.setdefault("access_log", True)
        return cls(**values)


#: Settings of a Kyoukai component that are Kyoukai's or Asphalt's, not kyoukai_fast's.
COMPONENT_KEYS = frozenset(("app", "ip", "port", "backend", "run_server", "ssl", "http2", "type",
                            "components", "server_name"))


def serves_with_kyoukai_fast(component: Any) -> bool:
    """Whether a Kyoukai component's backend is this package."""
    backend = getattr(component, "backend", None)
    return isinstance(backend, str) and backend.split(".")[0] == "kyoukai_fast"


def validate_component(component: Any) -> ProtocolConfig:
    """Check a Kyoukai component's settings and port before it serves anything.

    :raises SettingError: one line naming the bad setting and its value.
    """
    cfg = getattr(component, "cfg", None)
    config = cfg if isinstance(cfg, ProtocolConfig) else ProtocolConfig.from_mapping(
        cfg if isinstance(cfg, dict) else None)
    port = getattr(component, "port", None)
    if port is not None:
        port_number("port", port)
    return config


class ServerState:
    """What every connection of one component shares."""

    __slots__ = ("config", "environ_template", "connections", "closing", "typed_copy", "_reaper",
                 "request_handler", "hooks", "__weakref__")

    def __init__(self, config: ProtocolConfig, server_name: str, server_port: Any):
        self.config = config
        #: The constant part of every request's environ; copied, then completed, per request.
        self.environ_template = {
            "SERVER_NAME": server_name,
            "SERVER_PORT": str(server_port),
            **ENVIRON_BASE,  # the wsgi.* keys, as to_wsgi_environment sets them
        }
        #: Live protocol objects, for graceful shutdown.
        self.connections: set = set()
        #: Set once shutdown has begun: new requests get ``Connection: close``.
        self.closing = False
        #: The compiled protocol's typed copy of this state (its ServerShared), made once.
        self.typed_copy = None
        self._reaper = None
        #: ``handle(request, parent_context)``: the app's request pipeline (see _pipeline).
        self.request_handler = None
        #: Proxy headers, root path, concurrency limit, access log (None where switched off).
        self.hooks = request_hooks(config, self)

    def on_each_request(self, callback) -> None:
        """Call ``callback()`` as each request is handed to :attr:`request_handler`.

        Every protocol (both HTTP/1.1 twins, HTTP/2) starts a request through the server's
        handler, so this sees them all, while the app and the pipeline the handler runs are
        left as they are: counting requests this way (gunicorn's ``max_requests``) keeps the
        fast pipeline live. The callback runs before the app's code for that request.
        """
        handler = self.request_handler

        def handle(request, parent_context):
            callback()
            return handler(request, parent_context)

        handle.fast = handler.fast
        self.request_handler = handle
        if self.typed_copy is not None:  # a connection came first: its copy follows too
            self.typed_copy.request_handler = handle

    # One timer per server, not one per connection: an idle connection then costs no timer
    # handle, and a request costs no timer re-arming. Each tick asks every connection to check
    # its own deadlines (``check_timeouts``), which is a few attribute reads per connection.

    @property
    def reap_interval(self) -> float:
        """Seconds between timeout checks: a quarter of the shortest timeout, 10 ms to 1 s."""
        config = self.config
        shortest = min(config.keepalive_timeout, config.header_timeout,
                       config.linger_timeout or config.header_timeout)
        return min(1.0, max(0.01, shortest / 4))

    def add_connection(self, connection, loop) -> None:
        """Track a live connection; starts the timeout checks on the first one."""
        self.connections.add(connection)
        if self._reaper is None:
            self._reaper = loop.call_later(self.reap_interval, self._reap, loop)

    def remove_connection(self, connection) -> None:
        """Forget a connection; the timeout checks stop with the last one.

        Stopping them lets go of the event loop: a component outlives its loop in tests and in
        apps that restart their server, and its state must not keep that loop alive.
        """
        self.connections.discard(connection)
        if not self.connections and self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None

    def _reap(self, loop) -> None:
        self._reaper = None
        now = time.monotonic()
        for connection in list(self.connections):
            connection.check_timeouts(now)
        if self.connections:
            self._reaper = loop.call_later(self.reap_interval, self._reap, loop)


_states: weakref.WeakKeyDictionary[Any, ServerState] = weakref.WeakKeyDictionary()
#: Components that cannot be weakly referenced, by id, with the component itself: holding it
#: keeps its id from being reused by another object (kept for the life of the process).
_states_by_id: dict[int, tuple[Any, ServerState]] = {}


def existing_server_state(component: Any) -> ServerState | None:
    """The :class:`ServerState` of ``component`` if it has served a connection, else ``None``."""
    try:
        return _states.get(component)
    except TypeError:  # not weak-referenceable: by identity (see _states_by_id)
        entry = _states_by_id.get(id(component))
        return entry[1] if entry is not None and entry[0] is component else None


def server_state_for(component: Any, server_port: Any) -> ServerState:
    """The :class:`ServerState` of ``component``, made on its first connection."""
    state = existing_server_state(component)
    if state is not None:
        return state
    cfg = getattr(component, "cfg", None)
    config = cfg if isinstance(cfg, ProtocolConfig) else ProtocolConfig.from_mapping(
        cfg if isinstance(cfg, dict) else None
    )
    state = ServerState(config, component.get_server_name(), server_port)
    state.request_handler = request_handler(
        component.app, config.fast_pipeline and not pipeline_disabled_by_env())
    try:
        _states[component] = state
    except TypeError:
        _states_by_id[id(component)] = (component, state)
    return state
