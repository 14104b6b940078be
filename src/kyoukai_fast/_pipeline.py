"""
A faster ``Kyoukai.process_request`` with stock Kyoukai's observable behaviour.

Both HTTP/1.1 protocol twins (and any other protocol) get the function that serves a request
from :func:`request_handler`, once per server, and call it per request::

    handle = request_handler(app)                 # once
    response = await handle(request, parent_context)

The fast handler does what stock ``Kyoukai.process_request`` does, in the same order, with the
same objects, but skips work whose result nobody can observe:

* the three signals (``route_matched``, ``route_invoked``, ``route_completed``) are dispatched,
  through Asphalt's own ``Signal.dispatch``, whenever a listener can exist: a context's bound
  signal only exists once something touched ``ctx.<signal>``, so while no context has one (and
  this context has no attribute of that name of its own) no listener can be called, and the
  Event, the future and the weak-dict entry stock makes for nobody are not made;
* routing answers that werkzeug gave for a static rule (no converters, no defaults, no
  redirect) are remembered per root blueprint and map, keyed on everything
  ``Map.bind_to_environ`` and ``MapAdapter.match`` read from the environ; 404 and 405 answers
  too when no rule has a converter (a converter may refuse a value, so the answer could change).
  Everything else is matched by werkzeug on every request (converters run), with the map's
  ``MapAdapter`` (which matching does not change) bound once per key and query string, as
  ``Blueprint.match`` would bind it, unless ``Blueprint.match`` or ``bind_to_environ`` was
  replaced;
* ``Route.check_route_args``' ``inspect.signature`` is computed once per route callable;
* hooks are gathered from the blueprint chain as ``Blueprint.get_hooks`` gathers them;
* the request context is built with the attributes, in the order, ``HTTPRequestContext``'s
  constructor gives them, and entered and left inline; the constructor's ``DeprecationWarning``
  is issued through ``warnings.warn_explicit`` with the filename, line, module and registry
  ``warnings.warn`` would use, so the filters decide exactly as before (shown, ignored, raised);
* a ``str`` result with werkzeug's own ``Response`` class is made into the same response
  ``Response(result)`` makes, without its general constructor;
* ``log_route`` is not called while it is Kyoukai's own and the ``Kyoukai`` logger would drop
  the INFO record it makes.

Each shortcut has its guard; when a guard does not hold, the stock code runs for that step
(an overridden method, a subclassed route or blueprint, a replaced module function, a context
whose teardown has callbacks, a listener connected, ...). When the app or the installed
Kyoukai / Asphalt / werkzeug are not what these shortcuts were checked against (see
:func:`fast_pipeline_refusal`), :func:`request_handler` returns a handler that calls the app's
own ``process_request``.

Checked per request: ``Kyoukai.process_request`` and ``log_route`` (class and instance),
``context_class``, ``kyoukai.route.wrap_response``, ``kyoukai.app.version_format``, ``Response``
and ``logger``, ``warnings.warn``, the route's class and attributes, the blueprint chain's
classes and hooks, the root blueprint and its map (a root swapped at run time is followed).
Checked once per process, when the first server starts: the other Kyoukai, Asphalt and werkzeug
functions listed in :class:`_Stock` (patched later, they are not followed).

What the fast path does not follow: a route added to the blueprint tree after the app was
finalized taking the endpoint name of an already routed rule (``Blueprint.match`` would find it
with its linear scan; the remembered answer keeps the route found first), and a route callable's
signature changed after its first request (``__signature__``, ``__wrapped__``). Formatted
tracebacks in log records show this module's frames where stock shows Kyoukai's.
"""
from __future__ import annotations

import collections
import collections.abc
import dis
import inspect
import logging
import operator
import sys
import types
import warnings
import weakref
from asyncio import get_running_loop
from asyncio.tasks import _current_tasks
from collections.abc import Awaitable, Callable
from typing import Any

from ._settings import env_flag

__all__ = ("request_handler", "fast_pipeline_refusal", "pipeline_disabled_by_env",
           "pipeline_status", "ENV_SWITCH")

logger = logging.getLogger("kyoukai_fast")

#: Environment variable that turns the fast pipeline off for every server of the process.
ENV_SWITCH = "KYOUKAI_FAST_NO_PIPELINE"

#: Remembered routing answers per map, at most this many (then forgotten and learnt again).
ROUTE_CACHE_SIZE = 2048


def pipeline_disabled_by_env(environ=None) -> bool:
    """Whether ``KYOUKAI_FAST_NO_PIPELINE`` turns the fast pipeline off.

    Accepts the usual spellings (1/true/yes: off; 0/false/no/empty: on, any case); anything
    else is refused with a SettingError (a ValueError) naming the variable.
    """
    return env_flag(ENV_SWITCH, environ)


# --- what the shortcuts were checked against ------------------------------------------------

_SUPPORTED = {"kyoukai": ("2.2.1",), "asphalt": ("4.",), "werkzeug": ("2.2", "2.3", "3.")}


def _is_from(func, module: str, qualname: str) -> bool:
    """Whether ``func`` is the function ``qualname`` defined in ``module`` (not a patch)."""
    func = getattr(func, "__func__", func)
    return (isinstance(func, types.FunctionType) and func.__module__ == module
            and func.__qualname__ == qualname)


class _Stock:
    """The installed libraries' objects the fast path relies on, found and checked once."""

    refusal: str | None = None

    def __init__(self):
        import importlib.metadata as metadata

        for dist, prefixes in _SUPPORTED.items():
            try:
                version = metadata.version(dist)
            except metadata.PackageNotFoundError:
                self.refusal = f"{dist} is not installed as a distribution"
                return
            if not version.startswith(prefixes):
                self.refusal = f"{dist} {version} is not a version the fast pipeline knows"
                return
        if getattr(collections, "Mapping", None) is not collections.abc.Mapping:
            self.refusal = "collections.Mapping is missing (kyoukai_fast.compat not applied)"
            return
        import kyoukai.app as app_mod
        import kyoukai.asphalt as asphalt_mod
        import kyoukai.route as route_mod
        import kyoukai.util as util_mod
        from asphalt.core import context as context_mod
        from asphalt.core import event as event_mod
        from kyoukai.blueprint import Blueprint
        from kyoukai.route import Route
        from werkzeug.datastructures import Headers
        from werkzeug.exceptions import (
            BadRequestKeyError,
            HTTPException,
            InternalServerError,
            MethodNotAllowed,
            NotFound,
        )
        from werkzeug.routing import Map, RequestRedirect
        from werkzeug.wrappers import Response

        Kyoukai = app_mod.Kyoukai
        Context = context_mod.Context
        HTTPRequestContext = asphalt_mod.HTTPRequestContext
        Signal = event_mod.Signal
        checks = [
            (Kyoukai.process_request, "kyoukai.app", "Kyoukai.process_request"),
            (Kyoukai.log_route, "kyoukai.app", "Kyoukai.log_route"),
            (Kyoukai.__dict__["root"].fget, "kyoukai.app", "Kyoukai.root"),
            (Blueprint.match, "kyoukai.blueprint", "Blueprint.match"),
            (Blueprint.get_route, "kyoukai.blueprint", "Blueprint.get_route"),
            (Blueprint.get_hooks, "kyoukai.blueprint", "Blueprint.get_hooks"),
            (Route.invoke, "kyoukai.route", "Route.invoke"),
            (Route.invoke_function, "kyoukai.route", "Route.invoke_function"),
            (Route.check_route_args, "kyoukai.route", "Route.check_route_args"),
            (Route.get_hooks, "kyoukai.route", "Route.get_hooks"),
            (route_mod.wrap_response, "kyoukai.util", "wrap_response"),
            (HTTPRequestContext.__init__, "kyoukai.asphalt", "HTTPRequestContext.__init__"),
            (Context.__init__, "asphalt.core.context", "Context.__init__"),
            (Context.__aenter__, "asphalt.core.context", "Context.__aenter__"),
            (Context.__aexit__, "asphalt.core.context", "Context.__aexit__"),
            (Context.close, "asphalt.core.context", "Context.close"),
            (Signal.__get__, "asphalt.core.event", "Signal.__get__"),
            (Signal.dispatch, "asphalt.core.event", "Signal.dispatch"),
            (Response.__init__, "werkzeug.wrappers.response", "Response.__init__"),
            (Response.set_data, "werkzeug.wrappers.response", "Response.set_data"),
            (Headers.__setitem__, "werkzeug.datastructures.headers", "Headers.__setitem__"),
            (Headers.set, "werkzeug.datastructures.headers", "Headers.set"),
        ]
        for func, module, qualname in checks:
            if not _is_from(func, module, qualname):
                self.refusal = f"{qualname} is not {module}'s own (patched?)"
                return
        for cls in (HTTPRequestContext, Context):
            if "__setattr__" in cls.__dict__ or "__new__" in cls.__dict__:
                self.refusal = f"{cls.__name__} has its own __setattr__ or __new__"
                return
        signals = []
        for name in ("route_matched", "route_invoked", "route_completed"):
            signal = HTTPRequestContext.__dict__.get(name)
            if type(signal) is not Signal or not isinstance(
                    getattr(signal, "bound_signals", None), weakref.WeakKeyDictionary):
                self.refusal = f"HTTPRequestContext.{name} is not an Asphalt Signal"
                return
            signals.append(signal)
        self.matched_signals, self.invoked_signals, self.completed_signals = (
            s.bound_signals for s in signals)

        self.app_mod, self.route_mod, self.context_mod = app_mod, route_mod, context_mod
        self.Kyoukai, self.Blueprint, self.Route = Kyoukai, Blueprint, Route
        self.HTTPRequestContext, self.Context = HTTPRequestContext, Context
        self.process_request = Kyoukai.process_request
        self.log_route = Kyoukai.log_route
        self.wrap_response = util_mod.wrap_response
        self.Response, self.Headers, self.Map = Response, Headers, Map
        self.NotFound, self.MethodNotAllowed = NotFound, MethodNotAllowed
        self.RequestRedirect, self.HTTPException = RequestRedirect, HTTPException
        self.BadRequestKeyError, self.InternalServerError = BadRequestKeyError, InternalServerError
        self.kyoukai_logger = logging.getLogger("Kyoukai")
        self.log_sites = self._log_sites(Kyoukai.process_request)
        self.current_context_var = context_mod._current_context
        self.state_open = context_mod.ContextState.open
        self.state_closed = context_mod.ContextState.closed
        self.c_warn = warnings.warn
        self.c_warn_explicit = warnings.warn_explicit
        self.context_warning = self._context_warning(Context, HTTPRequestContext, asphalt_mod)
        self.context_keys = self._context_keys(HTTPRequestContext)
        self.plain_text = self._plain_text_response(Response, Headers)

    @staticmethod
    def _context_warning(Context, HTTPRequestContext, asphalt_mod):
        """What ``warnings.warn`` in ``Context.__init__`` is given and works out for the
        deprecated parent argument: (message, filename, lineno, module globals), or None."""
        message = next((c for c in Context.__init__.__code__.co_consts
                        if isinstance(c, str) and c.startswith("Explicitly passing the parent")),
                       None)
        code = HTTPRequestContext.__init__.__code__
        lineno = next((ins.positions.lineno for ins in dis.get_instructions(code)
                       if ins.argval == "__init__" and ins.positions is not None), None)
        if message is None or lineno is None:
            return None
        return message, code.co_filename, lineno, vars(asphalt_mod)

    @staticmethod
    def _log_sites(process_request):
        """The lines of ``process_request``'s own ``logger.<method>(...)`` calls, in order:
        [(method, lineno)], as a log record made there would show them; None if not found."""
        instructions = list(dis.get_instructions(process_request))
        sites = []
        for index, ins in enumerate(instructions):
            if (ins.opname in ("LOAD_METHOD", "LOAD_ATTR") and index
                    and instructions[index - 1].argval == "logger"
                    and ins.argval in ("debug", "info", "warning", "exception")):
                for after in range(index + 1, len(instructions)):
                    if instructions[after].opname == "POP_TOP":
                        call = instructions[after - 1]
                        if call.positions is None or not call.opname.startswith("CALL"):
                            return None
                        sites.append((ins.argval, call.positions.lineno))
                        break
        expected = ["debug", "debug", "info", "debug", "info", "exception"]
        if [method for method, _ in sites] != expected:
            return None
        return [line for _, line in sites]

    def _context_keys(self, HTTPRequestContext):
        """The attribute names a new HTTPRequestContext has, in order (made with no parent, so
        without the warning), if the fast constructor gives the same; else None."""
        request = types.SimpleNamespace(environ={})
        stock = HTTPRequestContext(None, request)
        keys = list(vars(stock))
        expected = ["_parent", "_state", "_resources", "_resource_factories",
                    "_resource_factories_by_context_attr", "_teardown_callbacks", "app",
                    "request", "params", "route", "bp", "rule", "environ", "proto"]
        return keys if keys == expected else None

    @staticmethod
    def _plain_text_response(Response, Headers):
        """A maker of ``Response(text)`` for werkzeug's Response if it gives the same object
        as the constructor (checked on a sample), else None."""
        content_type = None
        try:
            probe = Response("h\xe9llo")
            content_type = probe.headers.get("Content-Type")
        except Exception:
            return None
        if (Response.default_status != 200 or not Response.automatically_set_content_length
                or content_type is None):
            return None
        new = object.__new__

        def plain_text(text):
            body = text.encode()
            headers = new(Headers)
            headers._list = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
            response = new(Response)
            response.__dict__ = {"headers": headers, "_status": "200 OK", "_status_code": 200,
                                 "direct_passthrough": False, "_on_close": [],
                                 "response": [body]}
            return response

        made = plain_text("h\xe9llo")
        if (list(vars(made)) != list(vars(probe)) or made.headers.to_wsgi_list()
                != probe.headers.to_wsgi_list() or vars(made.headers) != vars(probe.headers)
                or made.response != probe.response or made.status != probe.status
                or made._on_close != probe._on_close):
            return None
        return plain_text


_stock: _Stock | None = None


def _stock_objects() -> _Stock:
    global _stock
    if _stock is None:
        try:
            _stock = _Stock()
        except Exception as exc:  # an import or an introspection failed: no fast path
            _stock = object.__new__(_Stock)
            _stock.refusal = f"cannot inspect Kyoukai/Asphalt/werkzeug ({exc!r})"
    return _stock


_APP_METHODS = ("process_request", "root")


def fast_pipeline_refusal(app) -> str | None:
    """Why ``app`` cannot be served by the fast pipeline, or None when it can."""
    stock = _stock_objects()
    if stock.refusal is not None:
        return stock.refusal
    if not isinstance(app, stock.Kyoukai):
        return f"the app is a {type(app).__name__}, not a Kyoukai app"
    cls = type(app)
    for name in _APP_METHODS:
        if getattr(cls, name) is not getattr(stock.Kyoukai, name):
            return f"{cls.__name__} overrides {name}"
        if name in vars(app):
            return f"the app has its own {name} attribute"
    if getattr(app, "context_class", None) is not stock.HTTPRequestContext:
        return "the app's context_class is not HTTPRequestContext"
    return None


def pipeline_status(component) -> str:
    """What serves the requests of a Kyoukai component's app, for a start-up line: "fast
    pipeline", or "stock pipeline (why)"."""
    from ._config import ProtocolConfig

    cfg = getattr(component, "cfg", None)
    config = cfg if isinstance(cfg, ProtocolConfig) else ProtocolConfig.from_mapping(
        cfg if isinstance(cfg, dict) else None)
    if not config.fast_pipeline:
        return "stock pipeline (fast_pipeline is off)"
    if pipeline_disabled_by_env():
        return f"stock pipeline ({ENV_SWITCH} is set)"
    refusal = fast_pipeline_refusal(getattr(component, "app", None))
    return "fast pipeline" if refusal is None else f"stock pipeline ({refusal})"


def _stock_handler(app) -> Callable:
    def handle(request, parent_context):
        return app.process_request(request, parent_context)
    handle.fast = False
    return handle


def request_handler(app, enabled: bool = True) -> Callable[[Any, Any], Awaitable[Any]]:
    """The function that serves one request of ``app``: ``handle(request, parent_context)``.

    ``request`` is the ``app.request_class`` instance of the request, ``parent_context`` the
    Asphalt context the protocol was made with; the result is an awaitable (a coroutine, so a
    protocol may drive it with ``send``) that gives the werkzeug Response, or raises what
    ``Kyoukai.process_request`` would raise. Resolve it once per server or connection, not per
    request. The handler has a ``fast`` attribute: whether it is the fast pipeline (``enabled``
    False, or an app :func:`fast_pipeline_refusal` refuses, give one calling the app's own
    ``process_request``).
    """
    if not enabled or fast_pipeline_refusal(app) is not None:
        return _stock_handler(app)
    return _fast_handler(app, _stock_objects())


# --- the fast pipeline ----------------------------------------------------------------------

class _RoutePlan:
    """What is computed once per route: the callable and its checked signature."""

    __slots__ = ("callable", "checks", "arg_count", "error")

    def __init__(self, route):
        self.callable = func = route._callable
        self.error = None
        self.checks = ()
        self.arg_count = None  # (None: the signature could not be read)
        try:
            sig = inspect.signature(func, follow_wrapped=True)
        except Exception:  # let the stock check raise it, every time
            self.error = True
            return
        self.arg_count = len(sig.parameters) - 1
        is_method = isinstance(func, types.MethodType)
        checks = []
        for n, arg in enumerate(sig.parameters.values()):
            if n == 0 or (is_method and n == 1):
                continue
            annotation = arg.annotation
            if annotation is None or annotation is inspect.Parameter.empty:
                annotation = None
            checks.append((arg.name, annotation))
        self.checks = tuple(checks)


class _Routes:
    """The remembered routing answers of one root blueprint and its map."""

    __slots__ = ("root", "map", "answers", "adapters", "cache_misses", "all_static")

    def __init__(self, root, rule_map):
        self.root = root
        self.map = rule_map
        self.answers = {}
        #: The map bound to an environ (a MapAdapter, which ``match`` does not change), by what
        #: ``bind_to_environ`` reads from it: for the answers that cannot be remembered.
        self.adapters = {}
        self.all_static = all(not rule.arguments for rule in rule_map.iter_rules())


_NOT_FOUND = object()


def _matches(pattern, text) -> bool:
    """A warning filter's message or module pattern against ``text``, as the C warnings
    module matches it (None: anything; a str: equal; else ``pattern.match``)."""
    if pattern is None:
        return True
    if type(pattern) is str:
        return pattern == text
    return bool(pattern.match(text))


def _ignores(filters, text, module, lineno) -> bool:
    """Whether the first of ``filters`` matching a DeprecationWarning with this message,
    module and line says "ignore" (False when none matches: the default action decides)."""
    for item in filters:
        if type(item) is not tuple or len(item) != 5:
            return False
        action, message, category, module_pattern, line = item
        if (_matches(message, text) and isinstance(category, type)
                and issubclass(DeprecationWarning, category) and _matches(module_pattern, module)
                and (line == 0 or line == lineno)):
            return action == "ignore"
    return False


def _plain_header_value(value) -> bool:
    """Whether werkzeug's Headers would store ``value`` as it is (a str with no newline)."""
    return type(value) is str and "\n" not in value and "\r" not in value


def _fast_handler(app, stock: _Stock) -> Callable:
    HTTPRequestContext = stock.HTTPRequestContext
    Blueprint, Route = stock.Blueprint, stock.Route
    process_request = stock.process_request
    stock_log_route = stock.log_route
    app_mod, route_mod = stock.app_mod, stock.route_mod
    stock_wrap = stock.wrap_response
    Response = stock.Response
    NotFound, MethodNotAllowed = stock.NotFound, stock.MethodNotAllowed
    RequestRedirect, HTTPException = stock.RequestRedirect, stock.HTTPException
    BadRequestKeyError, InternalServerError = stock.BadRequestKeyError, stock.InternalServerError
    matched_bound = stock.matched_signals.data
    invoked_bound = stock.invoked_signals.data
    completed_bound = stock.completed_signals.data
    kyoukai_logger = stock.kyoukai_logger
    current_var = stock.current_context_var
    OPEN, CLOSED = stock.state_open, stock.state_closed
    c_warn, c_warn_explicit = stock.c_warn, stock.c_warn_explicit
    warning = stock.context_warning
    fast_context = warning is not None and stock.context_keys is not None
    plain_text = stock.plain_text
    Mapping = collections.abc.Mapping
    isawaitable = inspect.isawaitable
    new = object.__new__
    INFO = logging.INFO
    if warning is not None:
        warning_message, warning_file, warning_line, warning_globals = warning
    Headers = stock.Headers
    plain_value = [None]  # the last header value checked by _plain_header_value
    plans: dict = {}
    routes_box = [None]
    ignoring = [None]  # warnings.filters as they were when they ignored the context warning
    current_tasks = _current_tasks
    usual_keys = operator.itemgetter("HTTP_HOST", "SERVER_NAME", "SERVER_PORT", "wsgi.url_scheme",
                                     "SCRIPT_NAME", "PATH_INFO", "REQUEST_METHOD")
    CoroutineType = types.CoroutineType
    traceback_format = __import__("traceback").format_exception

    blueprint_match, bind_to_environ = Blueprint.match, stock.Map.bind_to_environ
    Map = stock.Map

    def match(root, environ):
        rule_map = root.map
        routes = routes_box[0]
        if routes is None or routes.root is not root or routes.map is not rule_map:
            if type(root) is not Blueprint or type(rule_map) is not stock.Map:
                return root.match(environ)
            routes = routes_box[0] = _Routes(root, rule_map)
        if rule_map._remap:
            return root.match(environ)
        # everything bind_to_environ and match read from the environ
        get = environ.get
        try:
            key = (usual_keys(environ), get("HTTP_CONNECTION"), get("HTTP_UPGRADE"))
        except KeyError:
            key = (get("HTTP_HOST"), get("SERVER_NAME"), get("SERVER_PORT"),
                   get("wsgi.url_scheme"), get("SCRIPT_NAME"), get("PATH_INFO"),
                   get("REQUEST_METHOD"), get("HTTP_CONNECTION"), get("HTTP_UPGRADE"))
        answers = routes.answers
        answer = answers.get(key)
        if answer is not None:
            if answer is _NOT_FOUND:
                raise NotFound() from None
            if type(answer) is list:
                raise MethodNotAllowed(valid_methods=list(answer)) from None
            return answer[0], {}, answer[1]
        if len(answers) >= ROUTE_CACHE_SIZE:
            answers.clear()
        try:
            if (Blueprint.match is not blueprint_match or "match" in root.__dict__
                    or Map.bind_to_environ is not bind_to_environ):  # patched since
                route, params, rule = root.match(environ)
            else:
                # Blueprint.match, with the bound map reused: werkzeug matches (converters
                # run) on every request, as stock; binding reads only the key's fields and
                # the query string (for redirects).
                adapter_key = (key, get("QUERY_STRING"))
                adapters = routes.adapters
                adapter = adapters.get(adapter_key)
                if adapter is None:
                    adapter = rule_map.bind_to_environ(environ)
                    # "<invalid>": werkzeug warned that the host is not the server name it
                    # was given; it would warn again next time.
                    if adapter.subdomain != "<invalid>":
                        if len(adapters) >= ROUTE_CACHE_SIZE:
                            adapters.clear()
                        adapters[adapter_key] = adapter
                rule, params = adapter.match(return_rule=True)
                route = root.get_route(rule.endpoint)
        except NotFound as exc:
            if routes.all_static and type(exc) is NotFound:
                answers[key] = _NOT_FOUND
            raise
        except MethodNotAllowed as exc:
            if routes.all_static and type(exc) is MethodNotAllowed:
                answers[key] = list(exc.valid_methods)
            raise
        if (not params and type(params) is dict and not rule.arguments and not rule.defaults
                and rule.redirect_to is None and route is not None):
            answers[key] = (route, rule)
        return route, params, rule

    def plan_of(route):
        """The route's plan if the fast invocation may run it, else None."""
        if type(route) is not Route or len(route.__dict__) != 8:
            return None
        plan = plans.get(route)
        if plan is None or plan.callable is not route._callable:
            if len(plans) > 4096:
                plans.clear()
            plan = plans[route] = _RoutePlan(route)
        if plan.error is not None:
            return None
        return plan

    def hooks_of(bp, kind):
        """``bp.get_hooks(kind)``: parent to child; None where a blueprint is not plain."""
        chain = []
        while bp is not None:
            if type(bp) is not Blueprint:
                return None
            found = bp._request_hooks.get(kind)
            if found:
                chain.append(found)
            bp = bp._parent
        if not chain:
            return []
        hooks = []
        for found in reversed(chain):
            hooks.extend(found)
        return hooks

    async def invoke(route, ctx, params):
        """``await route.invoke(ctx, params=params)``, the same calls, less work."""
        plan = plan_of(route)
        if plan is None or route_mod.wrap_response is not stock_wrap:
            return await route.invoke(ctx, params=params)
        bp = route.bp
        pre_hooks = hooks_of(bp, "pre") if bp is not None else None
        post_hooks = hooks_of(bp, "post") if bp is not None else None
        if pre_hooks is None or post_hooks is None:
            return await route.invoke(ctx, params=params)
        ctx.route = route
        if not params:
            params = {}
        if route.do_argument_checking:
            if plan.arg_count < 0:
                raise TypeError("Route functions must take ctx argument")
            if plan.arg_count != len(params):
                raise TypeError(f"Route takes {plan.arg_count} args, "
                                f"passed in {len(params)} instead")
            for name, annotation in plan.checks:
                if name not in params:
                    raise ValueError(f"Argument {name} not found in args for callable "
                                     f"{route._callable.__name__}")
                if annotation is not None:
                    value = params[name]
                    if not isinstance(value, annotation):
                        raise TypeError(f"Argument {name} must be type {annotation} "
                                        f"(got type {type(value)})")
        else:
            params = list(params.values())
        if route.reverse_hooks:
            pre_hooks = list(reversed(pre_hooks))
            post_hooks = list(reversed(post_hooks))
        own = route.hooks
        if own:
            pre_hooks += own.get("pre", [])
            post_hooks += own.get("post", [])
        should_invoke_hooks = route.should_invoke_hooks
        if should_invoke_hooks:
            for hook in pre_hooks:
                replaced = await hook(ctx)
                if replaced is not None:
                    ctx = replaced
        func = route._callable
        if isinstance(params, Mapping):
            result = func(ctx, **params)
        else:
            result = func(ctx, *params)
        if isawaitable(result):
            result = await result
        response_class = ctx.app.response_class
        if type(result) is str and result and response_class is Response and plain_text:
            result = plain_text(result)
        else:
            result = stock_wrap(result, response_class)
        if should_invoke_hooks:
            for hook in post_hooks:
                replaced = await hook(ctx, result)
                if replaced is not None:
                    result = replaced
        return result

    log_sites = stock.log_sites
    log_file = process_request.__code__.co_filename
    Logger = logging.Logger
    METHODS = {logging.DEBUG: "debug", logging.INFO: "info", logging.ERROR: "exception"}

    def stock_log(site, level, message, exc_info=False):
        """``logger.<level>(message)`` as made on line ``site`` of stock process_request: the
        record shows that file, line and function, as stock's own call would."""
        log = app_mod.logger
        if log_sites is None or type(log) is not Logger:
            getattr(log, METHODS[level])(message, **({"exc_info": True} if exc_info else {}))
            return
        if not log.isEnabledFor(level):
            return
        if logging._srcfile:
            where = (log_file, log_sites[site], "process_request")
        else:
            where = ("(unknown file)", 0, "(unknown function)")
        record = log.makeRecord(log.name, level, where[0], where[1], message, (),
                                sys.exc_info() if exc_info else None, where[2], None, None)
        log.handle(record)

    def log_route(request, code):
        """``app.log_route(request, code)``, skipped when it is stock's and would log nothing."""
        if (type(app).log_route is not stock_log_route or "log_route" in app.__dict__
                or kyoukai_logger.isEnabledFor(INFO)):
            app.log_route(request, code)

    def context_warning():
        """The DeprecationWarning ``HTTPRequestContext(parent, request)`` issues, as
        ``warnings.warn`` in ``Context.__init__`` would issue it."""
        filters = warnings.filters
        if type(filters) is list and _ignores(filters, warning_message, "kyoukai.asphalt",
                                              warning_line):
            ignoring[0] = list(filters)  # until the filters change, nothing to do
            return
        registry = warning_globals.get("__warningregistry__")
        if registry is None:
            registry = warning_globals["__warningregistry__"] = {}
        c_warn_explicit(warning_message, DeprecationWarning, warning_file, warning_line,
                        "kyoukai.asphalt", registry)

    async def handle(request, parent_context):
        if (type(app).process_request is not process_request or app.__dict__.get(
                "process_request") is not None or app.context_class is not HTTPRequestContext):
            return await app.process_request(request, parent_context)
        root = app._root_bp
        if not root.finalized:
            raise RuntimeError("App was not finalized")
        # ctx = HTTPRequestContext(parent_context, request), the same object
        if (fast_context and warnings.warn is c_warn
                and warnings.warn_explicit is c_warn_explicit):
            if parent_context is None:
                parent = current_var.get(None)
            else:
                if warnings.filters != ignoring[0]:
                    context_warning()
                parent = parent_context
            ctx = new(HTTPRequestContext)
            ctx.__dict__ = {
                "_parent": parent, "_state": OPEN, "_resources": {}, "_resource_factories": {},
                "_resource_factories_by_context_attr": {}, "_teardown_callbacks": [],
                "app": None, "request": request, "params": None, "route": None, "bp": None,
                "rule": None, "environ": request.environ, "proto": None,
            }
        else:
            ctx = HTTPRequestContext(parent_context, request)
        ctx.app = app
        # async with ctx: Context.__aenter__, inline (the context is new: open, no loop)
        loop = get_running_loop()
        if ctx._loop is None:
            ctx._loop = loop
        ctx._host_task = current_tasks.get(loop)
        ctx._reset_token = current_var.set(ctx)
        try:
            # the body of ``async with ctx`` in stock process_request
            environ = request.environ
            try:
                matched, params, rule = match(root, environ)
                ctx.params = params
                ctx.rule = rule
            except NotFound as e:
                log_route(ctx.request, 404)
                stock_log(0, logging.DEBUG, f"Could not resolve route for {request.path}.")
                result = await app.handle_httpexception(ctx, e, request.environ)
                routed = False
            except MethodNotAllowed as e:
                log_route(ctx.request, 405)
                stock_log(1, logging.DEBUG, "Could not resolve valid method for "
                          f"{request.path} ({request.method})")
                result = await app.handle_httpexception(ctx, e, request.environ)
                routed = False
            except RequestRedirect as e:
                log_route(ctx.request, 307)
                e.code = 307
                result = e.get_response(request.environ)
                routed = False
            else:
                routed = True
                if matched_bound or "route_matched" in ctx.__dict__:
                    ctx.route_matched.dispatch(ctx=ctx)

            if routed:
                ctx.route = matched
                ctx.bp = ctx.route.bp

                result = None
                untouched = False  # result is a plain_text response no user code has seen
                try:
                    if invoked_bound or "route_invoked" in ctx.__dict__:
                        ctx.route_invoked.dispatch(ctx=ctx)
                    if ctx.request.method.upper() == "OPTIONS":
                        result = app_mod.Response(status=204)
                        result.headers["Allow"] = ",".join(x for x in ctx.rule.methods
                                                           if x != "OPTIONS")
                    else:
                        # await matched.invoke(ctx, params=params); inline for a route with no
                        # hooks, no arguments to check and the stock wrap_response
                        bp = matched.bp
                        plan = plans.get(matched)
                        if (plan is not None and plan.callable is matched._callable
                                and type(matched) is Route and len(matched.__dict__) == 8
                                and not matched.hooks and type(bp) is Blueprint
                                and bp._parent is None and not bp._request_hooks
                                and not params and type(params) is dict
                                and plan.arg_count == 0
                                and route_mod.wrap_response is stock_wrap):
                            ctx.route = matched
                            returned = matched._callable(ctx)
                            if type(returned) is CoroutineType or isawaitable(returned):
                                returned = await returned
                            response_class = ctx.app.response_class
                            if (type(returned) is str and returned
                                    and response_class is Response and plain_text is not None):
                                result = plain_text(returned)
                                untouched = True
                            else:
                                result = stock_wrap(returned, response_class)
                        else:
                            result = await invoke(matched, ctx, params)
                except BadRequestKeyError as e:
                    stock_log(2, logging.INFO,
                              "BadRequestKeyError: {}".format(' '.join(e.args)), True)
                    result = await app.handle_httpexception(ctx, e, request.environ)
                except HTTPException as e:
                    stock_log(3, logging.DEBUG,
                              ''.join(traceback_format(type(e), e, e.__traceback__)))
                    stock_log(4, logging.INFO,
                              f"Hit HTTPException ({str(e)}) inside function, delegating.")
                    result = await app.handle_httpexception(ctx, e, request.environ)
                except Exception as e:
                    stock_log(5, logging.ERROR, "Unhandled exception in route function", True)
                    new_e = InternalServerError()
                    new_e.__cause__ = e
                    result = await app.handle_httpexception(ctx, new_e, request.environ)
                else:
                    if completed_bound or "route_completed" in ctx.__dict__:
                        ctx.route_completed.dispatch(ctx=ctx, result=result)
                        untouched = False
                finally:
                    if result:
                        if (type(app).log_route is not stock_log_route
                                or "log_route" in app.__dict__
                                or kyoukai_logger.isEnabledFor(INFO)):
                            app.log_route(ctx.request, result.status_code)
                result = finish(result, untouched)
        except BaseException as exc:
            await ctx.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        # Context.__aexit__ with nothing to tear down, inline
        if (ctx._state is OPEN and not ctx._teardown_callbacks
                and current_var.get(None) is ctx):
            ctx._state = CLOSED
            current_var.reset(ctx._reset_token)
        else:
            await ctx.__aexit__(None, None, None)
        return result

    def finish(result, untouched):
        """The end of stock process_request: the Server and X-Powered-By headers, a body that
        is not bytes, str or list stringified."""
        version_format = app_mod.version_format
        if version_format is not plain_value[0]:
            plain_value[0] = version_format if _plain_header_value(version_format) else None
        if version_format is plain_value[0]:
            if untouched:
                # the list is plain_text's two headers; the body is a list
                result.headers._list += [("Server", version_format),
                                         ("X-Powered-By", version_format)]
                return result
            headers = result.headers
            if type(headers) is Headers:
                set_plain(headers._list, "Server", "server", version_format)
                if not isinstance(result.response, (bytes, str, list)):
                    result.set_data(str(result.response))
                headers = result.headers
                if type(headers) is Headers:
                    set_plain(headers._list, "X-Powered-By", "x-powered-by", version_format)
                else:
                    headers["X-Powered-By"] = version_format
                return result
        result.headers["Server"] = version_format
        if not isinstance(result.response, (bytes, str, list)):
            result.set_data(str(result.response))
        result.headers["X-Powered-By"] = version_format
        return result

    def set_plain(header_list, name, lower_name, value):
        """``Headers.set(name, value)`` for a value already known to be a valid str."""
        for index, (old, _) in enumerate(header_list):
            if old.lower() == lower_name:
                header_list[index] = (name, value)
                header_list[index + 1:] = [item for item in header_list[index + 1:]
                                           if item[0].lower() != lower_name]
                return
        header_list.append((name, value))

    handle.fast = True
    return handle
