"""
Loading a Kyoukai app (or an Asphalt config) and serving it on listening sockets.

Shared by the command line (``kyoukai_fast.cli``) and the gunicorn worker
(``kyoukai_fast.workers``). Serving always goes through Kyoukai's own ``KyoukaiComponent`` with
``backend="kyoukai_fast"`` (``run_server=False``, so the component does everything it does for a
user's app except opening the socket): the protocol objects come from the component's own
``get_protocol``, exactly as when the component serves by itself. Only the listening socket is
ours, so that it can be bound before the app starts (a clear error for a port in use, port 0 read
back), handed over by gunicorn, or wrapped in TLS with ALPN offering ``h2`` and ``http/1.1``.
"""
from __future__ import annotations

import asyncio
import dataclasses
import errno
import importlib
import os
import socket
import ssl
import sys
from functools import partial
from typing import Any

from . import compat
from ._config import ProtocolConfig, SettingError
from ._pipeline import pipeline_disabled_by_env
from ._settings import port_number
from ._shutdown import graceful_shutdown

__all__ = ("TargetError", "Target", "Served", "load_target", "bind", "bind_unix",
           "inherited_socket", "systemd_sockets", "socket_address", "make_ssl_context",
           "alpn_protocols", "validate_settings", "start", "stop", "stop_now", "new_event_loop")

CONFIG_SUFFIXES = (".yml", ".yaml")
INSTALL_HINT = ("pip install 'kyoukai-fast[kyoukai]' && "
                "pip install --no-deps kyoukai==2.2.1.post1")


class TargetError(Exception):
    """A mistake of the user's (bad ``module:app``, port in use, ...): one line, no traceback."""


@dataclasses.dataclass
class Target:
    """What to serve: a Kyoukai app object, or the root component of an Asphalt config."""

    spec: str
    app: Any = None
    config: dict | None = None  # the ``component`` mapping of an Asphalt config file
    #: ``(ip, port)`` of each Kyoukai component in the config, in the order they are served.
    addresses: list = dataclasses.field(default_factory=list)


def import_kyoukai():
    """Apply :mod:`kyoukai_fast.compat`, then import Kyoukai; a missing Kyoukai is a TargetError."""
    compat.apply()
    try:
        import kyoukai
        from kyoukai.asphalt import KyoukaiBaseComponent  # noqa: F401  (Asphalt too)
    except ImportError as exc:
        missing = (getattr(exc, "name", None) or "kyoukai").split(".")[0]
        what = "Kyoukai is not installed" if missing == "kyoukai" else \
            f"Kyoukai cannot be imported: {missing} is not installed"
        raise TargetError(f"{what}; install it with: {INSTALL_HINT}") from None
    return kyoukai


def is_config_spec(spec: str) -> bool:
    return spec.lower().endswith(CONFIG_SUFFIXES)


def load_target(spec: str) -> Target:
    """Resolve ``module:attr`` to a Kyoukai app, or read an Asphalt YAML config file."""
    import_kyoukai()
    cwd_importable()
    if is_config_spec(spec):
        return _load_config(spec)
    return Target(spec, app=_load_app(spec))


def cwd_importable() -> None:
    """Like gunicorn and uvicorn: modules in the current directory are importable (the app of
    ``MODULE:APP``, and the ``app:`` references of an Asphalt config)."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _load_app(spec: str):
    from kyoukai import Kyoukai

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise TargetError(f"expected MODULE:APP (e.g. myapp:app) or an Asphalt .yml config, "
                          f"got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise TargetError(f"cannot import module {module_name!r} (from {spec!r}): "
                              f"no module named {exc.name!r}") from None
        raise  # a module the app itself imports is missing: that traceback is the useful one
    app = module
    for part in attr.split("."):
        try:
            app = getattr(app, part)
        except AttributeError:
            raise TargetError(f"module {module_name!r} has no attribute {attr!r} "
                              f"(from {spec!r})") from None
    if not isinstance(app, Kyoukai):
        raise TargetError(f"{spec!r} is a {type(app).__name__}, not a kyoukai.Kyoukai app")
    return app


def _load_config(path: str) -> Target:
    """The root component mapping of an Asphalt config file, read as ``asphalt run`` reads it."""
    from asphalt.core.cli import binary_file_constructor, env_constructor, text_file_constructor
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe")
    yaml.constructor.add_constructor("!Env", env_constructor)
    yaml.constructor.add_constructor("!TextFile", text_file_constructor)
    yaml.constructor.add_constructor("!BinaryFile", binary_file_constructor)
    try:
        with open(path, encoding="utf-8") as stream:
            data = yaml.load(stream)
    except OSError as exc:
        raise TargetError(f"cannot read Asphalt config {path!r}: {exc.strerror}") from None
    except Exception as exc:
        raise TargetError(f"cannot parse Asphalt config {path!r}: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise TargetError(f"Asphalt config {path!r}: the document root must be a mapping")
    component = data.get("component")
    if component is None:
        services = data.get("services") or {}
        service = services.get("default") or (next(iter(services.values()))
                                              if len(services) == 1 else None)
        component = (service or {}).get("component")
    if not isinstance(component, dict):
        raise TargetError(f"Asphalt config {path!r} has no 'component' mapping")
    addresses = []
    _mark_kyoukai_components(component, None, addresses)
    if not addresses:
        raise TargetError(f"Asphalt config {path!r} has no Kyoukai component")
    return Target(path, config=component, addresses=addresses)


def _mark_kyoukai_components(config: dict, alias: str | None, addresses: list) -> None:
    """Find the Kyoukai components of a config tree, and make them leave the socket to us."""
    from asphalt.core.component import component_types
    from kyoukai.asphalt import KyoukaiBaseComponent

    ref = config.get("type", alias)
    try:
        cls = component_types.resolve(ref) if ref is not None else None
    except LookupError:
        cls = None  # Asphalt itself reports unknown component types when it starts
    except Exception as exc:
        raise TargetError(f"cannot load component type {ref!r}: {exc}") from None
    if isinstance(cls, type) and issubclass(cls, KyoukaiBaseComponent):
        config.setdefault("backend", "kyoukai_fast")
        config["run_server"] = False
        try:
            port = port_number("port", config.get("port", 4444))
            ProtocolConfig.from_mapping(config)  # what its start checks, before any bind
        except SettingError as exc:
            raise TargetError(f"{exc} (component {alias or ref!r})") from None
        addresses.append((config.get("ip", "127.0.0.1"), port))
    for name, child in (config.get("components") or {}).items():
        if isinstance(child, dict):
            _mark_kyoukai_components(child, name, addresses)


#: SD_LISTEN_FDS_START: the first socket systemd hands a socket-activated service.
SYSTEMD_FIRST_FD = 3
#: Unix socket permissions: the owner and its group (a proxy's user added to that group).
UNIX_SOCKET_MODE = 0o660


def bind_unix(path: str, backlog: int = 2048) -> socket.socket:
    """A listening Unix socket at ``path``, mode :data:`UNIX_SOCKET_MODE`.

    A socket file nobody listens on (left by a server that died) is replaced; one a server
    listens on, or a file that is not a socket, is a TargetError.
    """
    if not hasattr(socket, "AF_UNIX"):
        raise TargetError("--uds: Unix sockets are not available on this platform")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise TargetError(f"cannot listen on unix:{path}: {exc.strerror}") from None
    if mode is not None:
        import stat

        if not stat.S_ISSOCK(mode):
            raise TargetError(f"cannot listen on unix:{path}: it exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale: nobody accepts on it
        else:
            raise TargetError(f"cannot listen on unix:{path}: address already in use")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, UNIX_SOCKET_MODE)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise TargetError(f"cannot listen on unix:{path}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def inherited_socket(fd: int, what: str = "--fd") -> socket.socket:
    """The listening socket a parent process left open as ``fd`` (``--fd``, systemd)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise TargetError(f"{what} {fd}: not an open socket ({exc.strerror})") from None
    if sock.type != socket.SOCK_STREAM or not sock.getsockopt(socket.SOL_SOCKET,
                                                               socket.SO_ACCEPTCONN):
        sock.detach()
        raise TargetError(f"{what} {fd}: not a listening stream socket")
    sock.setblocking(False)
    return sock


def systemd_sockets() -> list:
    """Sockets passed by systemd socket activation (``LISTEN_FDS`` for this ``LISTEN_PID``), or
    ``[]``. The variables are removed, as ``sd_listen_fds(1)`` does, so that no child (gunicorn's
    arbiter reads them too) takes the sockets a second time."""
    count = os.environ.get("LISTEN_FDS")
    pid = os.environ.get("LISTEN_PID")
    if not count or not pid or pid != str(os.getpid()):
        return []
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    if not count.isdigit():
        raise TargetError(f"LISTEN_FDS={count!r} is not a number")
    return [inherited_socket(fd, "systemd fd")
            for fd in range(SYSTEMD_FIRST_FD, SYSTEMD_FIRST_FD + int(count))]


def socket_address(sock: socket.socket) -> tuple:
    """``(host, port)`` of a listening socket, for the component (a Unix socket: its path, 0)."""
    name = sock.getsockname()
    if isinstance(name, tuple):
        return name[:2]
    return (name.decode() if isinstance(name, bytes) else name) or "unix", 0


def bind(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket; an address in use is a TargetError."""
    try:
        port = port_number("port", port)
    except SettingError as exc:
        raise TargetError(str(exc)) from None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise TargetError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise TargetError(f"cannot listen on {host}:{port}: address already in use") from None
        raise TargetError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def alpn_protocols(http2: bool = True) -> list:
    """``h2`` first when HTTP/2 is on and its engine (h2) can be loaded, then ``http/1.1``."""
    from ._upgrade import http2_protocol_class

    return (["h2"] if http2 and http2_protocol_class() is not None else []) + ["http/1.1"]


def make_ssl_context(certfile: str, keyfile: str | None = None,
                     context: ssl.SSLContext | None = None, http2: bool = True) -> ssl.SSLContext:
    """A server TLS context (or ``context``, e.g. gunicorn's) offering ALPN h2 (unless
    ``http2`` is false) and http/1.1."""
    if context is None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(certfile, keyfile)
        except (OSError, ssl.SSLError) as exc:
            raise TargetError(f"cannot load TLS certificate {certfile!r}: {exc}") from None
    context.set_alpn_protocols(alpn_protocols(http2))
    return context


def new_event_loop(kind: str = "auto") -> asyncio.AbstractEventLoop:
    """``auto``: uvloop when installed, else asyncio; ``uvloop`` fails clearly when missing."""
    if kind not in ("auto", "asyncio", "uvloop"):
        raise TargetError(f"unknown event loop {kind!r} (auto, asyncio or uvloop)")
    if kind != "asyncio":
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise TargetError("--loop uvloop: uvloop is not installed "
                                  "(pip install 'kyoukai-fast[uvloop]')") from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class _Listeners:
    """Several asyncio servers behind the one ``component.server`` graceful_shutdown closes."""

    def __init__(self, servers):
        self.servers = servers
        self.sockets = [s for server in servers for s in server.sockets]

    def close(self):
        for server in self.servers:
            server.close()

    async def wait_closed(self):
        for server in self.servers:
            await server.wait_closed()


@dataclasses.dataclass
class Served:
    """What :func:`start` started: close it with :func:`stop`."""

    context: Any
    components: list
    root: Any = None

    @property
    def addresses(self) -> list:
        return [sock.getsockname()[:2] for c in self.components for sock in c.server.sockets]


def validate_settings(settings: dict | None) -> dict:
    """Validate ProtocolConfig settings (bad values fail here, not on the first connection)."""
    settings = {k: v for k, v in (settings or {}).items() if v is not None}
    try:
        config = ProtocolConfig.from_mapping(settings)
        pipeline_disabled_by_env()
    except (SettingError, ValueError) as exc:
        raise TargetError(str(exc)) from None
    return {name: getattr(config, name) for name in settings if hasattr(config, name)}


async def start(target: Target, sockets: list, *, ssl_context=None,
                settings: dict | None = None, backlog: int = 2048) -> Served:
    """Start serving ``target`` on ``sockets`` (bound, listening) in the running loop.

    ``backlog``: the listen backlog (the event loop calls ``listen`` again when it starts
    serving a socket). An app gets one ``KyoukaiComponent`` per socket. A config's Kyoukai
    components get one socket each, in order; a single Kyoukai component takes every socket
    (gunicorn with several binds).
    """
    from asphalt.core import Context

    loop = asyncio.get_running_loop()
    settings = validate_settings(settings)
    context = Context()
    if target.app is not None:
        from kyoukai.asphalt import KyoukaiComponent

        target.app.loop = loop  # Kyoukai took get_event_loop() when the app was made
        components = []
        for sock in sockets:
            host, port = socket_address(sock)
            component = KyoukaiComponent(target.app, host, port, backend="kyoukai_fast",
                                         run_server=False, **settings)
            await component.start(context)
            components.append(component)
        groups = [[sock] for sock in sockets]
        root = None
    else:
        root, components = await _start_config(target, context, loop, settings)
        if len(components) == 1:
            groups = [list(sockets)]
        elif len(components) == len(sockets):
            groups = [[sock] for sock in sockets]
        else:
            raise TargetError(f"{target.spec}: {len(components)} Kyoukai components but "
                              f"{len(sockets)} listening sockets")
    try:
        for component, group in zip(components, groups):
            component.app.finalize()
            servers = []
            for sock in group:
                port = socket_address(sock)[1]
                factory = partial(component.get_protocol, component.base_context,
                                  (component.get_server_name(), port))
                servers.append(await loop.create_server(factory, sock=sock, ssl=ssl_context,
                                                        backlog=backlog))
            component.server = servers[0] if len(servers) == 1 else _Listeners(servers)
    except BaseException:
        await context.close()
        raise
    return Served(context, components, root)


async def _start_config(target: Target, context, loop, settings: dict):
    from asphalt.core.component import component_types
    from kyoukai.asphalt import KyoukaiBaseComponent

    config = _with_settings(target.config, settings)
    # Apps referenced by the config are imported while the component is built: their Kyoukai
    # objects take the running loop from get_event_loop().
    asyncio.set_event_loop(loop)
    try:
        root = component_types.create_object(**config)
        await root.start(context)
    except LookupError as exc:
        # Asphalt's "error resolving reference deploy_app:app: could not import module": the
        # reason is the exception it chained
        cause = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
        raise TargetError(f"{target.spec}: {exc}{cause}") from None
    found = []
    _collect(root, KyoukaiBaseComponent, found)
    for component in found:
        component.app.loop = loop
    return root, found


def _with_settings(config: dict, settings: dict) -> dict:
    """A copy of the config tree with ``settings`` on every (marked) Kyoukai component."""
    config = dict(config)
    if config.get("run_server") is False:
        config.update(settings)
    if isinstance(config.get("components"), dict):
        config["components"] = {name: _with_settings(child, settings) if isinstance(child, dict)
                                else child for name, child in config["components"].items()}
    return config


def _collect(component, cls, found: list) -> None:
    if isinstance(component, cls):
        found.append(component)
    for child in (getattr(component, "child_components", None) or {}).values():
        _collect(child, cls, found)


async def stop(served: Served, timeout: float | None = None) -> int:
    """Graceful shutdown of every component (see :func:`kyoukai_fast.graceful_shutdown`), then
    close the Asphalt context. Returns the number of connections cut at the deadline."""
    cut = await asyncio.gather(*(graceful_shutdown(c, timeout) for c in served.components))
    await served.context.close()
    for component in served.components:
        close_access_log(component)
    return sum(cut)


def close_access_log(component) -> None:
    """Write the access log's last lines (waiting a moment for its writer) before exiting."""
    from ._config import existing_server_state

    state = existing_server_state(component)
    if state is not None and state.hooks.access_log is not None:
        state.hooks.access_log.close()


async def stop_now(served: Served) -> int:
    """Close every connection of a server already stopping (a second Ctrl-C)."""
    cut = await asyncio.gather(*(graceful_shutdown(c, 0) for c in served.components))
    return sum(cut)
