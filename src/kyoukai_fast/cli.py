"""
``kyoukai-fast run TARGET``: serve a Kyoukai app (``module:app``) or an Asphalt config file
(``config.yml``) with the kyoukai_fast backend, after applying :mod:`kyoukai_fast.compat`.

One worker serves in this process; ``--workers N`` runs N gunicorn workers
(:class:`kyoukai_fast.workers.KyoukaiWorker`) on the socket bound here. Ctrl-C or SIGTERM shuts
down gracefully (in-flight requests finish, for up to ``--shutdown-grace`` seconds). ``--reload``
runs the server in a child process on sockets bound here, and restarts it when a watched file
changes.

Logging defaults: ``--log-level`` (info) is the level of kyoukai_fast's own messages and of the
root logger; the access log (``--access-log``, on) writes one line per request; Kyoukai's logger,
whose ``log_route`` writes a second line per request at INFO, is at ``--kyoukai-log-level``:
``warning`` while the access log is on, else ``--log-level``.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import inspect
import logging
import os
import re
import signal
import sys

from ._config import ProtocolConfig
from ._settings import SettingError, convert, limit, port_number

__all__ = ("main", "build_parser", "protocol_settings")

PROG = "kyoukai-fast"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


#: Set in the child of ``--reload``: the sockets the supervisor bound, as ``fd,fd``.
RELOAD_FDS_ENV = "KYOUKAI_FAST_RELOAD_FDS"
GUNICORN_HINT = "pip install 'kyoukai-fast[gunicorn]'"
WATCHFILES_HINT = "pip install 'kyoukai-fast[reload]'"


def version_line() -> str:
    """``kyoukai-fast 0.1.0 (cython, CPython 3.11.9 on Linux)``."""
    import platform

    from . import IMPLEMENTATION, __version__

    return (f"{PROG} {__version__} ({IMPLEMENTATION}, {platform.python_implementation()} "
            f"{platform.python_version()} on {platform.system()})")


class _Version(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_line())
        parser.exit()


def _field_help() -> dict:
    """The ``#:`` comment above each ProtocolConfig field, as option help (so it cannot drift)."""
    try:
        source = inspect.getsource(ProtocolConfig)
    except (OSError, TypeError):
        return {}
    helps, comment = {}, []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            comment.append(stripped[2:].strip())
            continue
        match = re.match(r"(\w+)\s*:", stripped)
        if match and comment:
            helps[match.group(1)] = " ".join(comment).replace("``", "")
        comment = []
    return helps


def protocol_settings(args: argparse.Namespace) -> dict:
    """The ProtocolConfig settings given on the command line (others keep their defaults)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(ProtocolConfig)
            if getattr(args, f.name, None) is not None}


#: Other spellings of a setting's option: gunicorn's and hypercorn's.
OPTION_ALIASES = {"access_log_file": ("--access-logfile",)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Serve Kyoukai apps with kyoukai_fast.")
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run", help="serve a Kyoukai app or an Asphalt config",
        description="Serve TARGET: a Kyoukai app object as MODULE:APP, or an Asphalt YAML "
                    "config file (its Kyoukai components are served with kyoukai_fast).")
    run.add_argument("target", metavar="TARGET", help="MODULE:APP or config.yml")
    run.add_argument("--host", help="address to listen on (default 127.0.0.1, or the config's ip)")
    run.add_argument("--port", type=int,
                     help="port to listen on; 0 picks a free one (default 4444, or the config's)")
    run.add_argument("--uds", metavar="PATH",
                     help="listen on this Unix domain socket instead (mode 0660; a stale socket "
                          "file is replaced)")
    run.add_argument("--fd", type=int, metavar="N",
                     help="serve the listening socket inherited as file descriptor N")
    run.add_argument("--backlog", type=int, default=2048, metavar="N",
                     help="listen backlog of the sockets bound here (default 2048)")
    run.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                     help="event loop (auto: uvloop when installed)")
    run.add_argument("--workers", type=int, default=1, metavar="N",
                     help="worker processes; more than 1 runs gunicorn with "
                          "kyoukai_fast.workers.KyoukaiWorker")
    run.add_argument("--log-level", choices=LOG_LEVELS, default="info",
                     help="level of kyoukai_fast's and the root logger (default info)")
    run.add_argument("--kyoukai-log-level", choices=LOG_LEVELS,
                     help="level of Kyoukai's logger; at info it writes its own line per request "
                          "(default warning while the access log is on, else --log-level)")
    run.add_argument("--limit-max-requests", type=int, default=0, metavar="N",
                     help="stop after N requests (with --workers: a worker restarts after N, "
                          "plus a jitter)")
    run.add_argument("--max-requests-jitter", type=int, metavar="N",
                     help="with --workers: up to N more requests before a restart (default a "
                          "tenth of --limit-max-requests)")
    run.add_argument("--reload", action="store_true",
                     help="restart when a .py or .yml file in the current directory (or a "
                          "--reload-dir) changes; for development")
    run.add_argument("--reload-dir", action="append", metavar="DIR",
                     help="directory to watch with --reload (repeatable; implies --reload)")
    run.add_argument("--ssl-certfile", metavar="PATH", help="serve TLS with this certificate "
                     "(ALPN offers h2 when HTTP/2 is available, and http/1.1)")
    run.add_argument("--ssl-keyfile", metavar="PATH", help="the certificate's private key")
    run.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                     help="with --workers: gunicorn restarts a worker silent for this long")
    limits = run.add_argument_group("limits and timeouts (kyoukai_fast.ProtocolConfig)")
    helps = _field_help()
    for field in dataclasses.fields(ProtocolConfig):
        default = (field.default_factory() if field.default is dataclasses.MISSING
                   else field.default)
        default = CLI_DEFAULTS.get(field.name, default)  # what the command uses
        kind = type(default) if default is not None else str
        option = f"--{field.name.replace('_', '-')}"
        text = f"{helps.get(field.name, field.name)} (default {default})".replace("%", "%%")
        if kind is bool:
            # --access-log, --access-log false, --no-access-log
            limits.add_argument(option, dest=field.name, type=_parse_bool, nargs="?",
                                const=True, metavar="BOOL", help=text)
            limits.add_argument(f"--no-{option[2:]}", dest=field.name, action="store_const",
                                const=False, help=argparse.SUPPRESS)
        else:
            limits.add_argument(option, *OPTION_ALIASES.get(field.name, ()), dest=field.name,
                                type=kind, metavar=kind.__name__.upper(), help=text)
    return parser


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _fail(message: str) -> NoReturn:  # noqa: F821
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


#: The CLI's own defaults for settings whose library default differs (uvicorn's choices).
CLI_DEFAULTS = {"access_log": True}


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from ._serve import TargetError

    settings = {**CLI_DEFAULTS, **protocol_settings(args)}
    _configure_logging(args, settings)
    try:
        check_options(args)
        if args.reload or args.reload_dir:
            if not os.environ.get(RELOAD_FDS_ENV):
                from ._reload import supervise

                return supervise(args, sys.argv[1:] if argv is None else list(argv))
        return _run(args, settings)
    except (TargetError, SettingError) as exc:  # SettingError: a component's own settings
        _fail(str(exc))


def _configure_logging(args, settings) -> None:
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kyoukai_level = args.kyoukai_log_level or (
        "warning" if settings.get("access_log") else args.log_level)
    logging.getLogger("Kyoukai").setLevel(kyoukai_level.upper())


def startup_facts(settings: dict, loop: str) -> list:
    """What the start-up line reports, as ``(name, value)`` pairs: the implementation, the loop,
    HTTP/2, then every on/off setting of ProtocolConfig (so a new one shows up by itself)."""
    from . import HTTP2_ENGINE, IMPLEMENTATION

    config = ProtocolConfig.from_mapping(settings)
    http2 = HTTP2_ENGINE is not None and getattr(config, "http2", True)
    facts = [("implementation", IMPLEMENTATION), ("loop", loop),
             ("HTTP/2", f"on ({HTTP2_ENGINE})" if http2 else "off")]
    for field in dataclasses.fields(ProtocolConfig):
        value = getattr(config, field.name)
        if isinstance(value, bool) and field.name != "http2":
            facts.append((field.name, "on" if value else "off"))
    return facts


def startup_line(settings: dict, loop: str) -> str:
    return f"{PROG}: " + ", ".join(f"{name} {value}" for name, value in
                                   startup_facts(settings, loop))


def _loop_name(kind: str) -> str:
    if kind != "auto":
        return kind
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def _require(module: str, option: str, hint: str) -> None:
    """An optional dependency an option needs: a one-line error, before anything is bound."""
    try:
        importlib.import_module(module)
    except ImportError:
        from ._serve import TargetError

        raise TargetError(f"{option} needs {module}, which is not installed; install it "
                          f"with: {hint}") from None


def _addresses(args, target) -> list:
    from ._serve import is_config_spec

    if not is_config_spec(target.spec):
        return [(args.host or "127.0.0.1", 4444 if args.port is None else args.port)]
    addresses = list(target.addresses)
    if args.host is not None or args.port is not None:
        if len(addresses) != 1:
            from ._serve import TargetError

            raise TargetError(f"{target.spec} has {len(addresses)} Kyoukai components: "
                              "--host/--port would be ambiguous")
        host, port = addresses[0]
        addresses = [(args.host or host, port if args.port is None else args.port)]
    return addresses


def check_options(args) -> None:
    """Mistakes in the options alone: reported before the app is imported or a socket bound."""
    from . import _serve

    if args.workers < 1:
        raise _serve.TargetError("--workers must be at least 1")
    if args.workers > 1:
        _require("gunicorn", "--workers", GUNICORN_HINT)
    if (args.reload or args.reload_dir) and not os.environ.get(RELOAD_FDS_ENV):
        _require("watchfiles", "--reload", WATCHFILES_HINT)
        if args.workers > 1:
            raise _serve.TargetError("--reload and --workers cannot be combined")
    if args.port is not None:
        port_number("port", args.port)
    convert("timeout", "float", args.timeout, limit(above=0))
    if args.ssl_keyfile and not args.ssl_certfile:
        raise _serve.TargetError("--ssl-keyfile needs --ssl-certfile")
    if args.uds is not None and args.fd is not None:
        raise _serve.TargetError("--uds and --fd cannot be combined")
    if (args.uds is not None or args.fd is not None) and (args.host or args.port is not None):
        raise _serve.TargetError("--host/--port cannot be combined with --uds or --fd")
    if args.limit_max_requests < 0 or (args.max_requests_jitter or 0) < 0:
        raise _serve.TargetError("--limit-max-requests and --max-requests-jitter must not be "
                                 "negative")


def listening_sockets(args, target) -> list:
    """``(socket, origin)`` pairs: the reloader's, systemd's, ``--fd``, ``--uds``, else bound
    from ``--host``/``--port`` (or the config's addresses). ``origin`` is shown after the URL."""
    from . import _serve

    inherited = os.environ.pop(RELOAD_FDS_ENV, None)
    if inherited:
        return [(_serve.inherited_socket(int(fd)), "") for fd in inherited.split(",")]
    activated = _serve.systemd_sockets()
    if activated:
        return [(sock, f"systemd fd {sock.fileno()}") for sock in activated]
    if args.fd is not None:
        return [(_serve.inherited_socket(args.fd), f"fd {args.fd}")]
    if args.uds is not None:
        return [(_serve.bind_unix(args.uds, args.backlog), "")]
    return [(_serve.bind(host, port, args.backlog), "") for host, port in _addresses(args, target)]


def _run(args, settings=None) -> int:
    from . import IMPLEMENTATION, _serve

    settings = settings if settings is not None else protocol_settings(args)
    _serve.validate_settings(settings)  # validate before binding anything
    # The loop exists before the app is imported: Kyoukai(...) takes the current loop.
    loop = _serve.new_event_loop(args.loop if args.workers == 1 else "asyncio")
    asyncio.set_event_loop(loop)
    unix_paths = []
    reloaded = bool(os.environ.get(RELOAD_FDS_ENV))  # the supervisor owns the sockets
    try:
        target = _serve.load_target(args.target)
        if args.workers > 1 and len(target.addresses) > 1:
            raise _serve.TargetError("--workers serves one Kyoukai component; the config has "
                                     f"{len(target.addresses)}")
        ssl_context = (_serve.make_ssl_context(args.ssl_certfile, args.ssl_keyfile,
                                               http2=settings.get("http2", True))
                       if args.ssl_certfile else None)
        listening = listening_sockets(args, target)
        sockets = [sock for sock, _ in listening]
        if args.uds is not None and not reloaded:
            unix_paths.append(args.uds)
        scheme = "https" if ssl_context else "http"
        where = ", ".join(_url(scheme, sock) + (f" ({origin})" if origin else "")
                          for sock, origin in listening)
        if args.workers == 1:
            facts = startup_line(settings, _loop_name(args.loop))
            return loop.run_until_complete(_serve_here(
                target, sockets, ssl_context, settings, where, args.target, IMPLEMENTATION,
                facts, args.limit_max_requests, args.backlog))
        loop.close()
        asyncio.set_event_loop(None)
        # Each gunicorn worker makes its own loop (and points the app at it).
        from .workers import run_gunicorn

        print(f"{PROG}: serving {args.target} on {where} with {args.workers} gunicorn workers "
              f"({IMPLEMENTATION})", flush=True)
        print(startup_line(settings, _loop_name(args.loop)), flush=True)
        return run_gunicorn(args.target, sockets, workers=args.workers, loop=args.loop,
                            settings=settings, log_level=args.log_level, timeout=args.timeout,
                            certfile=args.ssl_certfile, keyfile=args.ssl_keyfile,
                            max_requests=args.limit_max_requests,
                            max_requests_jitter=args.max_requests_jitter, backlog=args.backlog)
    finally:
        if not loop.is_closed():
            loop.close()
            asyncio.set_event_loop(None)
        for path in unix_paths:
            try:
                os.unlink(path)
            except OSError:
                pass


def _url(scheme: str, sock) -> str:
    name = sock.getsockname()
    if not isinstance(name, tuple):
        return f"unix:{name.decode() if isinstance(name, bytes) else name}"
    host, port = name[:2]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _stop_after(served, count: int, stopping) -> None:
    """``--limit-max-requests`` in one process: stop accepting once ``count`` requests came
    (the request that reaches it is answered, then the server shuts down gracefully)."""
    seen = [0]
    apps = {id(c.app): c.app for c in served.components}
    for app in apps.values():
        process_request = app.process_request

        async def counted(request, parent_context, _process=process_request):
            seen[0] += 1
            if seen[0] == count:
                print(f"{PROG}: stopping after {count} requests (--limit-max-requests)",
                      flush=True)
                for component in served.components:
                    component.server.close()
                stopping.set()
            return await _process(request, parent_context)

        app.process_request = counted


async def _serve_here(target, sockets, ssl_context, settings, where, spec, implementation,
                      facts="", max_requests=0, backlog=2048) -> int:
    from . import _serve

    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    served = None
    hurried = []  # a second Ctrl-C / SIGTERM cuts what is still in flight

    def on_signal():
        if stopping.is_set() and served is not None and not hurried:
            print(f"{PROG}: cutting the requests still in flight", flush=True)
            hurried.append(asyncio.ensure_future(_serve.stop_now(served)))
        stopping.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, on_signal)
        except (NotImplementedError, RuntimeError):  # Windows: Ctrl-C is a KeyboardInterrupt
            pass
    if hasattr(signal, "SIGUSR1"):  # as gunicorn: reopen the log files (after logrotate)
        from ._access_log import reopen_files

        loop.add_signal_handler(signal.SIGUSR1, reopen_files)
    served = await _serve.start(target, sockets, ssl_context=ssl_context, settings=settings,
                                backlog=backlog)
    if max_requests:
        _stop_after(served, max_requests, stopping)
    from ._pipeline import pipeline_status

    pipelines = ", ".join(sorted({pipeline_status(c) for c in served.components}))
    print(f"{PROG}: serving {spec} on {where} ({implementation}, {pipelines}, "
          f"pid {os.getpid()})", flush=True)
    if facts:
        print(facts, flush=True)
    try:
        await stopping.wait()
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    logging.getLogger("kyoukai_fast").info("Shutting down gracefully (again to cut in-flight "
                                           "requests)")
    cut = await _serve.stop(served)
    for task in hurried:
        cut += await task
    print(f"{PROG}: stopped ({cut} connection(s) cut)", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
