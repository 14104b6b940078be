"""
Per-request deployment features, written once for every protocol (both HTTP/1.1 twins, HTTP/2).

A server whose settings switch none of them on gets ``None`` hooks, and the twins skip them with
one ``is not None`` test each:

* ``proxies`` (:class:`~kyoukai_fast._proxy.TrustedProxies`): called through
  :func:`~kyoukai_fast._proxy.apply_proxy_headers` only for requests carrying a proxy header;
* ``on_request(protocol, environ)``, once the head is parsed: the concurrency limit (503), the
  root path (``SCRIPT_NAME``), the access log's start time;
* ``on_response(environ, data, streamed)``, once an HTTP/1.x response's bytes are written (or a
  refusal's): the access log. HTTP/2 writes no such bytes: it calls ``access_log.record``.

HTTP/2 runs the first two through :func:`before_request`; the HTTP/1.1 twins inline the same
tests on their hot path. With the access log's default format, each HTTP/1.1 twin takes its hooks
from :meth:`RequestHooks.for_twin`: its own ``AccessLine`` (compiled or pure-Python) makes the
line in one call, and stamps the start itself when nothing else runs on the request.
"""
from __future__ import annotations

import time

from werkzeug.exceptions import ServiceUnavailable

from ._access_log import START_KEY
from ._errors import HTTPLimitExceeded
from ._proxy import PROXY_HEADER_KEYS, apply_proxy_headers

__all__ = ("RequestHooks", "request_hooks", "before_request", "START_KEY")


class RequestHooks:
    __slots__ = ("proxies", "on_request", "on_response", "access_log", "only_stamp")

    def __init__(self, proxies=None, on_request=None, on_response=None, access_log=None,
                 only_stamp=False):
        """``only_stamp``: ``on_request`` does nothing but the access log's start time."""
        self.proxies = proxies
        self.on_request = on_request
        self.on_response = on_response
        self.access_log = access_log
        self.only_stamp = only_stamp

    def for_twin(self, line_class):
        """``(on_request, on_response)`` for the HTTP/1.1 twin whose ``AccessLine`` class is
        ``line_class``: the access log's default lines made by it."""
        line = self.access_log.access_line(line_class) if self.access_log is not None else None
        if line is None:
            return self.on_request, self.on_response
        return (line.stamp if self.only_stamp else self.on_request), line.log


def request_hooks(config, state) -> RequestHooks:
    """The hooks ``config`` (a ProtocolConfig) asks for; ``state`` is the server's ServerState."""
    from ._proxy import TrustedProxies

    proxies = TrustedProxies(config.forwarded_allow_ips) if config.proxy_headers else None
    limit = config.limit_concurrency
    root = config.root_path
    access_log = None
    if config.access_log:
        from ._access_log import AccessLog

        access_log = AccessLog(config.access_log_format, path=config.access_log_file)
    if not (limit or root or access_log):
        return RequestHooks(proxies)
    connections = state.connections
    now = time.perf_counter
    unavailable = ServiceUnavailable("The server is at its concurrency limit; try again later.")

    def on_request(protocol, environ):
        if limit and len(connections) > limit:
            raise HTTPLimitExceeded(unavailable)
        if root:
            environ["SCRIPT_NAME"] = root
            path = environ["PATH_INFO"]
            if path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
                environ["PATH_INFO"] = path[len(root):] or "/"
        if access_log is not None:
            environ[START_KEY] = now()

    hooks = RequestHooks(proxies, on_request, access_log.log if access_log else None, access_log,
                         only_stamp=not (limit or root))
    if access_log is not None and access_log.default:
        from ._access_line_py import AccessLine

        # the pure-Python twin's, and the refusals' of both twins (see _connection)
        hooks.on_request, hooks.on_response = hooks.for_twin(AccessLine)
    return hooks


def before_request(hooks: RequestHooks, protocol, environ: dict) -> None:
    """Proxy headers, then ``on_request``, for the complete head of ``environ``.

    :raises HTTPLimitExceeded: the request is refused (503 at the concurrency limit).
    """
    if hooks.proxies is not None:
        for key in PROXY_HEADER_KEYS:
            if key in environ:
                apply_proxy_headers(environ, hooks.proxies)
                break
    if hooks.on_request is not None:
        hooks.on_request(protocol, environ)
