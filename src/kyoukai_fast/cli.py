"""
``kyoukai-fast run TARGET``: serve a Kyoukai app (``module:app``) or an Asphalt config file
(``config.yml``) with the kyoukai_fast backend, after applying :mod:`kyoukai_fast.compat`.

One worker serves in this process; ``--workers N`` runs N gunicorn workers
(:class:`kyoukai_fast.workers.KyoukaiWorker`) on the socket bound here. Ctrl-C or SIGTERM shuts
down gracefully (in-flight requests finish, for up to ``--shutdown-grace`` seconds).
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Serve Kyoukai apps with kyoukai_fast.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run", help="serve a Kyoukai app or an Asphalt config",
        description="Serve TARGET: a Kyoukai app object as MODULE:APP, or an Asphalt YAML "
                    "config file (its Kyoukai components are served with kyoukai_fast).")
    run.add_argument("target", metavar="TARGET", help="MODULE:APP or config.yml")
    run.add_argument("--host", help="address to listen on (default 127.0.0.1, or the config's ip)")
    run.add_argument("--port", type=int,
                     help="port to listen on; 0 picks a free one (default 4444, or the config's)")
    run.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                     help="event loop (auto: uvloop when installed)")
    run.add_argument("--workers", type=int, default=1, metavar="N",
                     help="worker processes; more than 1 runs gunicorn with "
                          "kyoukai_fast.workers.KyoukaiWorker")
    run.add_argument("--log-level", choices=LOG_LEVELS, default="info")
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
        kind = type(default) if default is not None else str
        limits.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name,
                            type=_parse_bool if kind is bool else kind,
                            metavar=kind.__name__.upper(),
                            help=f"{helps.get(field.name, field.name)} (default {default})")
    return parser


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _fail(message: str) -> "NoReturn":  # noqa: F821
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ._serve import TargetError

    try:
        return _run(args)
    except (TargetError, SettingError) as exc:  # SettingError: a component's own settings
        _fail(str(exc))


def _addresses(args, target) -> list:
    if target.app is not None:
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


def _run(args) -> int:
    from . import IMPLEMENTATION
    from . import _serve

    if args.workers < 1:
        raise _serve.TargetError("--workers must be at least 1")
    if args.port is not None:
        port_number("port", args.port)
    convert("timeout", "float", args.timeout, limit(above=0))
    if args.ssl_keyfile and not args.ssl_certfile:
        raise _serve.TargetError("--ssl-keyfile needs --ssl-certfile")
    settings = protocol_settings(args)
    _serve.validate_settings(settings)  # validate before binding anything
    # The loop exists before the app is imported: Kyoukai(...) takes the current loop.
    loop = _serve.new_event_loop(args.loop if args.workers == 1 else "asyncio")
    asyncio.set_event_loop(loop)
    try:
        target = _serve.load_target(args.target)
        if args.workers > 1 and len(target.addresses) > 1:
            raise _serve.TargetError("--workers serves one Kyoukai component; the config has "
                                     f"{len(target.addresses)}")
        ssl_context = (_serve.make_ssl_context(args.ssl_certfile, args.ssl_keyfile)
                       if args.ssl_certfile else None)
        sockets = [_serve.bind(host, port) for host, port in _addresses(args, target)]
        scheme = "https" if ssl_context else "http"
        where = ", ".join(_url(scheme, sock) for sock in sockets)
        if args.workers == 1:
            return loop.run_until_complete(_serve_here(target, sockets, ssl_context, settings,
                                                       where, args.target, IMPLEMENTATION))
    finally:
        loop.close()
        asyncio.set_event_loop(None)
    # Each gunicorn worker makes its own loop (and points the app at it).
    from .workers import run_gunicorn

    print(f"{PROG}: serving {args.target} on {where} with {args.workers} gunicorn workers "
          f"({IMPLEMENTATION})", flush=True)
    return run_gunicorn(args.target, sockets, workers=args.workers, loop=args.loop,
                        settings=settings, log_level=args.log_level, timeout=args.timeout,
                        certfile=args.ssl_certfile, keyfile=args.ssl_keyfile)


def _url(scheme: str, sock) -> str:
    host, port = sock.getsockname()[:2]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


async def _serve_here(target, sockets, ssl_context, settings, where, spec, implementation) -> int:
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
    served = await _serve.start(target, sockets, ssl_context=ssl_context, settings=settings)
    print(f"{PROG}: serving {spec} on {where} ({implementation}, pid {os.getpid()})", flush=True)
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
