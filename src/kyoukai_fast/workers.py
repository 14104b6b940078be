"""
gunicorn worker classes that serve a Kyoukai app with kyoukai_fast, one event loop per worker::

    gunicorn -k kyoukai_fast.workers.KyoukaiWorker myapp:app -w 4 -b 127.0.0.1:8000
    gunicorn -k kyoukai_fast.workers.KyoukaiUVLoopWorker myapp:app -w 4   # uvloop
    gunicorn -k kyoukai_fast.workers.KyoukaiWorker config.yml -w 4        # an Asphalt config

Each worker applies :mod:`kyoukai_fast.compat`, imports the app (or builds the config's
components) in its own process, and serves the fast protocol through Kyoukai's own
``KyoukaiComponent`` on the sockets gunicorn bound (``loop.create_server(sock=...)``).

What the worker honours from gunicorn's settings:

* ``bind`` (every socket), ``certfile`` / ``keyfile`` (TLS; ALPN offers ``h2`` when HTTP/2 is
  available, and ``http/1.1``);
* ``timeout``: the worker notifies the arbiter every ``min(1, timeout / 2)`` seconds from its
  event loop, so a loop blocked for longer than ``timeout`` gets the worker restarted;
* ``graceful_timeout``: SIGTERM (gunicorn's graceful stop, reload, scale-down) stops accepting,
  lets in-flight requests finish (:func:`kyoukai_fast.graceful_shutdown`) until shortly before
  gunicorn's deadline (``graceful_timeout`` less a quarter of it, at most one second), cuts
  what is left and exits; SIGQUIT / SIGINT (quick stop) close every connection at once;
* ``loglevel`` / ``errorlog``: Kyoukai's and kyoukai_fast's loggers (route tracebacks, 500s)
  write to gunicorn's error log, unless the root logger has handlers of its own;
* ``max_requests`` (+ ``max_requests_jitter``): after that many requests the worker shuts down
  gracefully and gunicorn starts a fresh one;
* ``keepalive``, ``limit_request_line``, ``limit_request_fields``, ``limit_request_field_size``
  when set to something other than gunicorn's default: the matching kyoukai_fast limits
  (``keepalive_timeout``, ``max_url_size``, ``max_header_count``, ``max_header_size``);
* ``accesslog`` (``-``: stdout, or a file), ``access_log_format`` (the same atoms) and
  ``forwarded_allow_ips`` when not gunicorn's default: the kyoukai_fast access log and proxy
  header settings; SIGUSR1 reopens the access log's file with gunicorn's own log files.

``--preload`` is not supported: gunicorn's preloading insists on a callable WSGI app, and a
Kyoukai app is not one; each worker loads the app itself.
"""
from __future__ import annotations

import asyncio
import logging
import math
import os
import signal

from gunicorn.errors import AppImportError
from gunicorn.workers.base import Worker

from . import _serve
from ._config import ProtocolConfig, server_state_for

__all__ = ("KyoukaiWorker", "KyoukaiUVLoopWorker", "run_gunicorn", "gunicorn_options")

# gunicorn setting -> kyoukai_fast.ProtocolConfig field, used when set to a non-default value.
_GUNICORN_LIMITS = {
    "keepalive": "keepalive_timeout",
    "limit_request_line": "max_url_size",
    "limit_request_fields": "max_header_count",
    "limit_request_field_size": "max_header_size",
}


class KyoukaiWorker(Worker):
    """A gunicorn worker running kyoukai_fast on an asyncio event loop."""

    #: Event loop of this worker class: ``asyncio`` or ``uvloop``.
    LOOP = "asyncio"

    def init_process(self):
        self.loop = _serve.new_event_loop(self.LOOP)
        asyncio.set_event_loop(self.loop)
        self._wakeup = None
        self._quick = False
        super().init_process()  # loads the app (load_wsgi) and calls run()

    def _wire_logging(self):
        if logging.getLogger().handlers:
            return  # the application configured logging itself
        error_log = self.log.error_log
        for name in ("Kyoukai", "kyoukai_fast"):
            logger = logging.getLogger(name)
            if not logger.handlers:
                for handler in error_log.handlers:
                    logger.addHandler(handler)
                logger.setLevel(error_log.level)

    def load_wsgi(self):
        self._wire_logging()
        spec = (getattr(self.app, "kyoukai_fast_target", None)
                or getattr(self.app, "app_uri", None))
        if not spec:
            raise AppImportError("No Kyoukai app given (MODULE:APP or an Asphalt config file)")
        try:
            # Settings first: a bad one stops the worker from booting, and gunicorn with it.
            _serve.validate_settings(self.protocol_settings())
            self.target = _serve.load_target(spec)
        except _serve.TargetError as exc:
            raise AppImportError(str(exc)) from None
        self.wsgi = None

    def protocol_settings(self) -> dict:
        """kyoukai_fast limits: the CLI's, else gunicorn's own where they are not the default."""
        settings = dict(getattr(self.app, "kyoukai_fast_settings", None) or {})
        for name, field in _GUNICORN_LIMITS.items():
            setting = self.cfg.settings.get(name)
            if setting is not None and setting.value != setting.default and setting.value:
                settings.setdefault(field, setting.value)
        settings.setdefault("shutdown_grace", float(self.cfg.graceful_timeout))
        # gunicorn's --access-logfile (- or a file) / --access-logformat / --forwarded-allow-ips
        if self.cfg.accesslog:
            settings.setdefault("access_log", True)
            settings.setdefault("access_log_file", self.cfg.accesslog)
        format_setting = self.cfg.settings.get("access_log_format")
        if format_setting is not None and format_setting.value != format_setting.default:
            settings.setdefault("access_log_format", format_setting.value)
        allowed = self.cfg.settings.get("forwarded_allow_ips")
        if allowed is not None and allowed.value != allowed.default:
            value = allowed.value
            settings.setdefault("forwarded_allow_ips",
                                value if isinstance(value, str) else ",".join(value))
        return settings

    def ssl_context(self):
        if not self.cfg.is_ssl:
            return None
        http2 = ProtocolConfig.from_mapping(self.protocol_settings()).http2
        try:
            from gunicorn.sock import ssl_context  # gunicorn >= 21: honours its TLS settings
        except ImportError:
            return _serve.make_ssl_context(self.cfg.certfile, self.cfg.keyfile, http2=http2)
        return _serve.make_ssl_context(None, context=ssl_context(self.cfg), http2=http2)

    def run(self):
        try:
            self.loop.run_until_complete(self._serve())
        finally:
            self.loop.close()

    # --- signals: on the event loop, so that shutdown can await in-flight requests ---------------

    def _on_graceful(self):
        self.alive = False
        self._wakeup.set()

    def _on_quick(self):
        self.alive = False
        self._quick = True
        self._wakeup.set()
        self.cfg.worker_int(self)

    def handle_usr1(self, sig, frame):
        """gunicorn's "reopen the log files": the access log's file too."""
        super().handle_usr1(sig, frame)
        from ._access_log import reopen_files

        reopen_files()

    def _install_signals(self):
        for signum, handler in ((signal.SIGTERM, self._on_graceful),
                                (signal.SIGQUIT, self._on_quick),
                                (signal.SIGINT, self._on_quick)):
            self.loop.add_signal_handler(signum, handler)

    def _count_requests(self, components):
        """Count requests for max_requests at each server's request handler, not by patching
        the app (whose unpatched class keeps the fast pipeline live); the request that reaches
        the limit stops accepting at once, so no other one slips in."""
        def counted():
            self.nr += 1
            if self.nr >= self.max_requests:
                for component in components:
                    component.server.close()
                self._wakeup.set()

        for component in components:
            # The port the protocols are given: that of the component's (first) socket.
            port = _serve.socket_address(component.server.sockets[0])[1]
            server_state_for(component, port).on_each_request(counted)

    async def _serve(self):
        self._wakeup = asyncio.Event()
        self._install_signals()
        settings = self.protocol_settings()
        # Finish before the arbiter's own graceful_timeout runs out and it SIGKILLs us.
        limit = float(self.cfg.graceful_timeout)
        self._grace = min(float(settings["shutdown_grace"]), limit - min(1.0, limit / 4))
        try:
            served = await _serve.start(self.target, [s.sock for s in self.sockets],
                                        ssl_context=self.ssl_context(), settings=settings,
                                        backlog=self.cfg.backlog)
        except _serve.TargetError as exc:
            # A config whose app cannot be imported: every worker would fail the same way.
            # AppImportError makes gunicorn halt with the reason instead of restarting workers
            # forever.
            raise AppImportError(str(exc)) from None
        if self.cfg.max_requests > 0:
            self._count_requests(served.components)
        from . import IMPLEMENTATION

        self.log.info("kyoukai_fast worker %s serving (%s, %s loop)", self.pid, IMPLEMENTATION,
                      self.LOOP)
        interval = min(1.0, self.timeout / 2) if self.timeout else 1.0
        while self.alive:
            self.notify()
            if self.ppid != os.getppid():
                self.log.info("Parent changed, shutting down: %s", self)
                break
            if self.nr >= self.max_requests:
                self.log.info("Autorestarting worker after current request.")
                break
            try:
                await asyncio.wait_for(self._wakeup.wait(), interval)
            except asyncio.TimeoutError:
                pass
            self._wakeup.clear()
        self.alive = False
        await self._shut_down(served)

    async def _shut_down(self, served):
        grace = 0.0 if self._quick else self._grace
        stopping = asyncio.ensure_future(_serve.stop(served, grace))
        # Keep the heartbeat going while requests drain; a quick-stop signal cuts them short.
        while not stopping.done():
            self.notify()
            if self._quick and grace:
                grace = 0.0
                for component in served.components:
                    asyncio.ensure_future(_serve.graceful_shutdown(component, 0))
            woken = asyncio.ensure_future(self._wakeup.wait())
            await asyncio.wait([stopping, woken],
                               timeout=min(1.0, self.timeout / 2) if self.timeout else 1.0,
                               return_when=asyncio.FIRST_COMPLETED)
            woken.cancel()
            self._wakeup.clear()
        cut = stopping.result()
        if cut:
            self.log.warning("%d connection(s) cut at the graceful timeout", cut)


class KyoukaiUVLoopWorker(KyoukaiWorker):
    """:class:`KyoukaiWorker` on uvloop."""

    LOOP = "uvloop"


def _uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def gunicorn_options(spec: str, sockets: list, *, workers: int, loop: str = "auto",
                     settings: dict | None = None, log_level: str = "info",
                     timeout: float = 30.0, certfile: str | None = None,
                     keyfile: str | None = None, max_requests: int = 0,
                     max_requests_jitter: int | None = None, backlog: int = 2048) -> dict:
    """gunicorn's settings for the CLI's ``--workers N`` on already-bound ``sockets``.

    ``max_requests``: a worker restarts after that many requests, each after a random number
    more, up to ``max_requests_jitter`` (default a tenth of ``max_requests``), so that workers
    started together do not all restart together.
    """
    settings = dict(settings or {})
    use_uvloop = loop == "uvloop" or (loop == "auto" and _uvloop_available())
    if loop == "uvloop" and not _uvloop_available():
        raise _serve.TargetError("--loop uvloop: uvloop is not installed")
    worker = KyoukaiUVLoopWorker if use_uvloop else KyoukaiWorker
    options = {
        "bind": [f"fd://{sock.fileno()}" for sock in sockets],
        "workers": workers,
        "worker_class": f"{worker.__module__}.{worker.__qualname__}",
        # Whole seconds, with room for the worker to drain for the exact shutdown_grace first.
        "graceful_timeout": math.ceil(settings.get("shutdown_grace", 10.0)) + 1,
        "timeout": max(1, math.ceil(timeout)),
        "loglevel": log_level,
        "proc_name": f"kyoukai-fast {spec}",
        "backlog": backlog,
    }
    if certfile:
        options["certfile"] = certfile
        if keyfile:
            options["keyfile"] = keyfile
    if max_requests:
        options["max_requests"] = max_requests
        options["max_requests_jitter"] = (max_requests // 10 if max_requests_jitter is None
                                          else max_requests_jitter)
    return options


def run_gunicorn(spec: str, sockets: list, **kwargs) -> int:
    """Run gunicorn with :class:`KyoukaiWorker` on already-bound ``sockets`` (the CLI's
    ``--workers N``; ``kwargs`` as for :func:`gunicorn_options`). Ctrl-C (SIGINT) is a graceful
    stop here, like SIGTERM."""
    from gunicorn.app.base import BaseApplication
    from gunicorn.arbiter import Arbiter

    settings = dict(kwargs.get("settings") or {})
    options = gunicorn_options(spec, sockets, **kwargs)

    class GracefulArbiter(Arbiter):
        def handle_int(self):
            raise StopIteration  # as SIGTERM: halt() stops the workers gracefully

    class KyoukaiFastApplication(BaseApplication):
        kyoukai_fast_target = spec
        kyoukai_fast_settings = settings

        def load_config(self):
            for key, value in options.items():
                self.cfg.set(key, value)
            if "control_socket_disable" in self.cfg.settings:  # gunicorn >= 25.1
                self.cfg.set("control_socket_disable", True)

        def load(self):  # each worker loads the target itself (KyoukaiWorker.load_wsgi)
            return None

        def run(self):
            GracefulArbiter(self).run()

    KyoukaiFastApplication().run()
    return 0
