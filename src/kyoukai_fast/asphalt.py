"""
Kyoukai's Asphalt component, ready for ``asphalt run`` on modern Python.

``asphalt run config.yml`` imports the component class named in the config before anything else,
so stock ``kyoukai.asphalt:KyoukaiComponent`` fails on werkzeug 3 before kyoukai_fast could help.
Name this one instead::

    component:
      type: kyoukai_fast.asphalt:KyoukaiComponent   # or type: kyoukai_fast, when installed
      app: myapp:app
      ip: 127.0.0.1
      port: 4444
      backend: kyoukai_fast

Importing this module applies :mod:`kyoukai_fast.compat`. The class is Kyoukai's own
``KyoukaiComponent`` with two additions: ``backend`` defaults to ``kyoukai_fast``, and when the
Asphalt context closes (SIGTERM or Ctrl-C under ``asphalt run``) the server shuts down
gracefully (:func:`kyoukai_fast.graceful_shutdown`) instead of dropping in-flight requests.
The start-up log line says whether the fast request pipeline serves the app (the
``fast_pipeline`` key, like every ProtocolConfig setting, can be set in the YAML block).
"""
import logging

from . import compat

compat.apply()

from kyoukai.asphalt import KyoukaiComponent as _KyoukaiComponent  # noqa: E402

from ._pipeline import pipeline_disabled_by_env, pipeline_status  # noqa: E402
from ._shutdown import graceful_shutdown  # noqa: E402

__all__ = ("KyoukaiComponent",)


class KyoukaiComponent(_KyoukaiComponent):
    """``kyoukai.asphalt.KyoukaiComponent`` defaulting to the kyoukai_fast backend."""

    def __init__(self, app, ip: str = "127.0.0.1", port: int = 4444, **cfg):
        cfg.setdefault("backend", "kyoukai_fast")
        super().__init__(app, ip, port, **cfg)

    async def start(self, ctx):
        pipeline_disabled_by_env()  # a bad value fails the start, not the first request
        await super().start(ctx)
        if self.server is not None:
            ctx.add_teardown_callback(self._shut_down)
            status = pipeline_status(self)
            for sock in self.server.sockets:  # the real port, also when the config says 0
                host, port = sock.getsockname()[:2]
                logging.getLogger("kyoukai_fast").info("kyoukai_fast serving on %s:%s (%s)",
                                                       host, port, status)

    async def _shut_down(self):
        await graceful_shutdown(self)
