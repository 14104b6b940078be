"""
Differential harness for the request pipeline: one app built twice, one copy served by stock
``Kyoukai.process_request``, the other by ``kyoukai_fast._pipeline.request_handler``, the same
requests to both, and everything either shows compared.

An app builder is ``build(rec) -> Kyoukai`` (not finalized; ``finalize`` options in the app's
``test_map_options`` attribute). User code in it reports what it sees through ``rec(...)``;
``snap(ctx)`` is what a callback saw of its context. :func:`outcome` of a request is a plain,
comparable value: status, header list, body, the calls user code reported in order, the final
context's attribute names and state, the ``Kyoukai`` log records, the warnings and the escaping
exception.
"""
from __future__ import annotations

import asyncio
import logging
import re
import warnings

from asphalt.core import Context, current_context
from kyoukai import Kyoukai
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from kyoukai_fast._pipeline import request_handler

_ADDRESS = re.compile(r"0x[0-9a-fA-F]+")


def scrub(text) -> str:
    """``text`` without memory addresses (the two copies of an app are different objects)."""
    return _ADDRESS.sub("0x?", str(text))


_FRAME = re.compile(r'  File "[^"]*/kyoukai(?:_fast)?/[^"]*", line \d+, in \w+\n(?:    .*\n)*')


def frames_of_user_code(text: str) -> str:
    """A formatted traceback without the frames of Kyoukai and kyoukai_fast themselves (the one
    thing that differs: which library functions were on the stack)."""
    return _FRAME.sub("", text)


def snap(ctx) -> tuple:
    """What a callback can see of its context, as a comparable value."""
    try:
        current = current_context() is ctx
    except Exception as exc:  # no current context
        current = type(exc).__name__
    rule = getattr(ctx, "rule", None)
    route = getattr(ctx, "route", None)
    bp = getattr(ctx, "bp", None)
    return (type(ctx).__name__, tuple(vars(ctx)), scrub(getattr(ctx, "params", None)),
            None if rule is None else (rule.rule, sorted(rule.methods or ()), rule.host),
            None if route is None else route.get_endpoint_name(),
            None if bp is None else bp.name, current, ctx._state.name)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        self.records.append((record.name, record.levelname,
                             scrub(frames_of_user_code(record.getMessage())),
                             record.pathname, record.lineno, record.funcName, record.module,
                             None if exc is None else (type(exc).__name__, scrub(exc),
                                                       type(exc.__cause__).__name__)))


def make_environ(path="/", method="GET", headers=None, query_string=None, host=None,
                 body=None) -> dict:
    builder = EnvironBuilder(path=path, method=method, headers=headers or {},
                             query_string=query_string, data=body)
    environ = builder.get_environ()
    if host is not None:
        environ["HTTP_HOST"] = host
    return environ


class Served:
    """One copy of an app and the function serving it."""

    def __init__(self, build, fast: bool, loop):
        self.calls = []
        self.contexts = []

        def rec(*what):
            self.calls.append(tuple(scrub(w) if isinstance(w, str) else w for w in what))

        rec.contexts = self.contexts
        self.app = build(rec)
        self.app.finalize(**getattr(self.app, "test_map_options", {}))
        self.parent = Context()
        if fast:
            handler = request_handler(self.app)
            assert handler.fast, "the fast pipeline refused an app it should serve"
            self.handle = handler
        else:
            self.handle = lambda request, parent: self.app.process_request(request, parent)


async def _serve_one(served: Served, environ: dict):
    request = Request(environ)
    response = await served.handle(request, served.parent)
    for _ in range(5):  # listeners run in tasks of their own
        await asyncio.sleep(0)
    return response


def outcome(served: Served, environ: dict, loop, warning_filter="always", log_level=logging.DEBUG):
    """Serve one request; everything observable about it, as a comparable value."""
    logger = logging.getLogger("Kyoukai")
    records = _Records()
    old_level = logger.level
    logger.addHandler(records)
    logger.setLevel(log_level)
    served.calls.clear()
    served.contexts.clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter(warning_filter)
            warnings.filterwarnings("ignore", category=ResourceWarning)
            try:
                response = loop.run_until_complete(_serve_one(served, environ))
                escaped = None
            except BaseException as exc:  # what escapes process_request, compared
                response = None
                escaped = (type(exc).__name__, scrub(exc),
                           None if exc.__context__ is None else type(exc.__context__).__name__)
    finally:
        logger.removeHandler(records)
        logger.setLevel(old_level)
    result = {
        "escaped": escaped,
        "calls": list(served.calls),
        "contexts": [(tuple(vars(c)), c._state.name) for c in served.contexts],
        "logs": records.records,
        "warnings": [(w.category.__name__, str(w.message), w.filename, w.lineno, w.line)
                     for w in caught],
    }
    if response is not None:
        result.update(type=type(response).__name__, status=response.status,
                      headers=response.headers.to_wsgi_list(),
                      body=scrub(response.get_data()) if response.response is not None else None)
    return result


def differences(build, requests, **options) -> list:
    """Serve ``requests`` (``make_environ`` keyword dicts) by both pipelines; the requests whose
    outcomes differ, with both outcomes."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            stock = Served(build, False, loop)
            fast = Served(build, True, loop)
        found = []
        for request in requests:
            expected = outcome(stock, make_environ(**request), loop, **options)
            got = outcome(fast, make_environ(**request), loop, **options)
            if expected != got:
                found.append((request, expected, got))
        return found
    finally:
        loop.close()
        asyncio.set_event_loop(None)


def app_of(name="app", **kwargs) -> Kyoukai:
    loop = asyncio.get_event_loop()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return Kyoukai(name, loop=loop, **kwargs)
