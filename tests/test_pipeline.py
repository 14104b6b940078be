"""
kyoukai_fast's request pipeline against stock ``Kyoukai.process_request``: many apps, many
requests, everything observable compared (see ``pipeline_harness``), plus hypothesis-made route
tables and paths; and tests that the fast path is taken where it should be, and not elsewhere.
"""

import asyncio
import functools
import gc
import logging
import string
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kyoukai import Blueprint, HTTPRequestContext, Kyoukai
from kyoukai.routegroup import RouteGroup
from kyoukai.routegroup import errorhandler as group_errorhandler
from kyoukai.routegroup import route as group_route
from kyoukai.util import as_html, as_json
from werkzeug.exceptions import Forbidden, NotFound
from werkzeug.routing import BaseConverter, ValidationError
from werkzeug.wrappers import Request, Response

from kyoukai_fast import _pipeline
from kyoukai_fast._pipeline import fast_pipeline_refusal, pipeline_disabled_by_env, request_handler
from pipeline_harness import app_of, differences, make_environ, snap


class Fatal(BaseException):
    """A BaseException raised by a route: it must escape both pipelines."""


# --- apps -------------------------------------------------------------------------------------

def returns_app(rec):
    """A route per return type, raise and context operation."""
    app = app_of("returns")

    def route(path, **kw):
        def wrap(func):
            @functools.wraps(func)
            async def body(ctx, **params):
                rec("route", func.__name__, snap(ctx))
                rec.contexts.append(ctx)
                result = func(ctx, **params)
                if asyncio.iscoroutine(result):
                    result = await result
                return result
            return app.route(path, **kw)(body)
        return wrap

    route("/")(lambda ctx: "Hello, world!")
    route("/unicode")(lambda ctx: "h\xe9llo \u2603")
    route("/bytes")(lambda ctx: b"raw")
    route("/none")(lambda ctx: None)
    route("/empty")(lambda ctx: "")
    route("/zero")(lambda ctx: 0)
    route("/one")(lambda ctx: ("only body",))
    route("/two")(lambda ctx: ("created", 201))
    route("/three")(lambda ctx: ("teapot", 418, {"X-Extra": "1"}))
    route("/four")(lambda ctx: ("a", 200, {}, "too many"))
    route("/response")(lambda ctx: Response("made", status=202, headers={"Server": "mine"}))
    route("/html")(lambda ctx: as_html("<b>x</b>"))
    route("/json")(lambda ctx: as_json({"a": [1, 2]}))
    route("/int")(lambda ctx: 5)
    route("/list")(lambda ctx: Response([b"a", b"b"]))
    route("/tuplebody")(lambda ctx: Response((b"a", b"b")))
    route("/dict")(lambda ctx: {"k": "v"})
    route("/surrogate")(lambda ctx: "\ud800")

    @route("/raise")
    def _raise(ctx):
        raise ValueError("boom")

    @route("/forbidden")
    def _forbidden(ctx):
        raise Forbidden()

    @route("/badkey")
    def _badkey(ctx):
        return ctx.request.args["missing"]

    @route("/query")
    def _query(ctx):
        return repr(sorted(ctx.request.args.items(multi=True)))

    @route("/fatal")
    def _fatal(ctx):
        raise Fatal("stop")

    @route("/close")
    async def _close(ctx):
        await ctx.close()
        return "closed early"

    @route("/teardown")
    def _teardown(ctx):
        ctx.add_teardown_callback(lambda: rec("teardown", "first"))

        async def second(exc):
            rec("teardown", "second", repr(exc))
        ctx.add_teardown_callback(second, True)
        ctx.add_teardown_callback(lambda exc: rec("teardown", "third", repr(exc)), True)
        return "with teardown"

    @route("/teardown-raise")
    def _teardown_raise(ctx):
        ctx.add_teardown_callback(lambda exc: rec("teardown", repr(exc)), True)
        raise Forbidden()

    @route("/teardown-fails")
    def _teardown_fails(ctx):
        def fail():
            raise LookupError("teardown failed")
        ctx.add_teardown_callback(fail)
        return "x"

    @route("/listen")
    def _listen(ctx):
        ctx.route_completed.connect(lambda event: rec("completed", event.result.status,
                                                      snap(event.ctx)))
        ctx.route_matched.connect(lambda event: rec("matched-late"))
        return "listened"

    @route("/listen-async")
    def _listen_async(ctx):
        async def listener(event):
            rec("completed-async", event.topic)
        ctx.route_completed.connect(listener)
        ctx.route_completed.connect(lambda event: 1 / 0)
        return "listened"

    @route("/listen-then-fail")
    def _listen_fail(ctx):
        ctx.route_completed.connect(lambda event: rec("never"))
        raise ValueError("after connecting")

    @route("/sync-plain")
    def _sync_plain(ctx):
        return "sync"

    @app.route("/methods", methods=["GET", "POST", "PUT"])
    async def methods(ctx):
        rec("methods", ctx.request.method)
        return ctx.request.method

    @app.route("/dir/")
    async def directory(ctx):
        return "dir"

    @app.route("/bare-sync")
    def bare_sync(ctx):
        rec("bare-sync", snap(ctx))
        return "plain sync route"

    return app


RETURN_PATHS = ["/", "/unicode", "/bytes", "/none", "/empty", "/zero", "/one", "/two", "/three",
                "/four", "/response", "/html", "/json", "/int", "/list", "/tuplebody", "/dict",
                "/surrogate", "/raise", "/forbidden", "/badkey", "/fatal", "/close",
                "/teardown", "/teardown-raise", "/teardown-fails", "/listen", "/listen-async",
                "/listen-then-fail", "/sync-plain", "/bare-sync", "/methods", "/dir/"]

EDGE_REQUESTS = [
    {"path": "/missing"},
    {"path": "/dir"},                                   # slash redirect: 307, no signals
    {"path": "/dir", "query_string": "a=1&b=%zz"},
    {"path": "/methods", "method": "POST"},
    {"path": "/methods", "method": "DELETE"},           # 405
    {"path": "/", "method": "POST"},
    {"path": "/", "method": "OPTIONS"},
    {"path": "/methods", "method": "OPTIONS"},
    {"path": "/", "method": "HEAD"},
    {"path": "/", "method": "get"},                     # lowercase method
    {"path": "/methods", "method": "options"},
    {"path": "/query", "query_string": "a=1&a=2&b=%zz&&=x&%ff=%fe"},
    {"path": "/", "headers": {"Connection": "Upgrade", "Upgrade": "websocket"}},
    {"path": "/", "headers": {"Connection": "keep-alive, Upgrade", "Upgrade": "WebSocket"}},
    {"path": "/", "host": "b\xc3\xbccher.example"},     # IDN host, as WSGI gives it
    {"path": "/", "host": "xn--bcher-kva.example:8080"},
    {"path": "/", "host": "a" * 64 + ".example"},       # not IDNA-encodable: BadHost
    {"path": "/", "host": ""},
    {"path": "/", "host": "[::1]:80"},
    {"path": "/\xc3\xbc"},                              # non-ASCII path (UTF-8 as latin-1)
    {"path": "/%ff%fe"},
    {"path": "//"},
    {"path": "/./"},
    {"path": "/" + "x" * 300},
]


def blueprint_app(rec):
    """Nested blueprints with prefixes, hooks at every level, error handlers per blueprint."""
    app = app_of("bps")
    outer = Blueprint("outer", prefix="/outer")
    inner = Blueprint("inner", prefix="/inner")
    other = Blueprint("other", prefix="/other")

    def hook(where, kind, replace=None):
        async def pre(ctx):
            rec("pre", where, snap(ctx))
            if replace == "ctx":
                return ctx
        async def post(ctx, result):
            rec("post", where, result.status)
            if replace == "result":
                return Response(f"replaced by {where}", status=203)
        return pre if kind == "pre" else post

    app.root.before_request(hook("root", "pre"))
    app.root.after_request(hook("root", "post"))
    outer.before_request(hook("outer", "pre", replace="ctx"))
    outer.after_request(hook("outer", "post"))
    inner.before_request(hook("inner", "pre"))
    inner.after_request(hook("inner", "post", replace="result"))

    @outer.route("/plain")
    async def plain(ctx):
        rec("route", "plain", snap(ctx))
        return "outer plain"

    @outer.route("/reverse", reverse_hooks=True)
    async def reverse(ctx):
        rec("route", "reverse")
        return "reversed"

    @inner.route("/deep")
    async def deep(ctx):
        rec("route", "deep", snap(ctx))
        return "deep"

    @inner.route("/deep-raise")
    async def deep_raise(ctx):
        raise NotFound()

    @inner.route("/deep-error")
    async def deep_error(ctx):
        raise RuntimeError("inner failure")

    route_hooked = inner.wrap_route(lambda ctx: "route hooks")
    route_hooked._callable.__name__ = "route_hooked"
    inner.add_route(route_hooked, "/route-hooks")
    route_hooked.before_request(hook("route", "pre"))
    route_hooked.after_request(hook("route", "post"))

    no_hooks = inner.wrap_route(lambda ctx: "no hooks", should_invoke_hooks=False,
                                endpoint="inner.no_hooks")
    inner.add_route(no_hooks, "/no-hooks")

    @inner.errorhandler(404)
    async def inner_404(ctx, exc):
        rec("errorhandler", "inner 404", snap(ctx))
        return as_json({"error": "inner 404"}, code=404)

    @inner.errorhandler(500)
    async def inner_500(ctx, exc):
        rec("errorhandler", "inner 500", type(exc.__cause__).__name__)
        return "handled 500", 500

    @other.route("/forbidden")
    async def other_forbidden(ctx):
        raise Forbidden()

    @other.route("/teapot")
    async def other_teapot(ctx):
        return "short", 418

    @other.errorhandler(403)
    async def other_403(ctx, exc):
        raise NotFound()  # an error handler raising another HTTP error

    @other.errorhandler(418)
    async def other_418(ctx, exc):
        raise ValueError("handler broken")

    @app.root.errorhandler(404)
    async def root_404(ctx, exc):
        rec("errorhandler", "root 404", snap(ctx))
        return "root says 404", 404

    @app.root.errorhandler(405)
    async def root_405(ctx, exc):
        return "wrong code", 400

    outer.add_child(inner)
    app.register_blueprint(outer)
    app.register_blueprint(other)
    return app


BLUEPRINT_REQUESTS = [{"path": p} for p in (
    "/outer/plain", "/outer/reverse", "/outer/inner/deep", "/outer/inner/deep-raise",
    "/outer/inner/deep-error", "/outer/inner/route-hooks", "/outer/inner/no-hooks",
    "/other/forbidden", "/other/teapot", "/outer/missing", "/outer", "/outer/inner/deep/")] + [
    {"path": "/outer/plain", "method": "POST"}, {"path": "/outer/plain", "method": "OPTIONS"}]


def arguments_app(rec):
    """Converters, annotations, argument checking and decorated routes."""
    app = app_of("args")

    class RecordingConverter(BaseConverter):
        """A converter that reports every call (converters run on every request)."""

        regex = r"[a-z]+"

        def to_python(self, value):
            rec("to_python", value)
            if value == "refuse":
                raise ValidationError()
            return value.upper()

    app.test_map_options = {"converters": {"rec": RecordingConverter}}

    @app.route("/user/<int:uid>")
    async def user(ctx, uid: int):
        rec("user", uid, snap(ctx))
        return f"user {uid}"

    @app.route("/wrongtype/<name>")
    async def wrongtype(ctx, name: int):
        return "never"

    @app.route("/wrongname/<name>")
    async def wrongname(ctx, other):
        return "never"

    @app.route("/toomany/<a>")
    async def toomany(ctx):
        return "never"

    @app.route("/noctx")
    async def noctx():
        return "never"

    @app.route("/rec/<rec:word>")
    async def recorded(ctx, word):
        rec("word", word)
        return word

    @app.route("/default", defaults={"page": 1})
    @app.route("/default/<int:page>")
    async def default(ctx, page):
        return f"page {page}"

    @app.route("/multi/<int:a>/<path:rest>")
    async def multi(ctx, a: int, rest: str):
        return f"{a} {rest}"

    unchecked = app.root.wrap_route(lambda ctx, x, y: f"{x}-{y}", do_argument_checking=False,
                                    endpoint="app.unchecked")
    app.root.add_route(unchecked, "/unchecked/<x>/<y>")

    def logged(func):
        @functools.wraps(func)
        async def wrapper(ctx, *args, **kwargs):
            rec("decorator", func.__name__)
            return await func(ctx, *args, **kwargs)
        return wrapper

    @app.route("/decorated/<int:n>")
    @logged
    async def decorated(ctx, n: int):
        return f"decorated {n}"

    @app.route("/string-annotation/<n>")
    async def string_annotation(ctx, n: str):
        return "never"

    class Callable:
        __name__ = "callable_object"

        def __call__(self, ctx):
            return "callable object"

    app.root.add_route(app.root.wrap_route(Callable()), "/callable")
    app.root.add_route(app.root.wrap_route(len), "/builtin")
    return app



ARGUMENT_REQUESTS = [{"path": p} for p in (
    "/user/7", "/user/-1", "/user/x", "/user/007", "/wrongtype/a", "/wrongname/a", "/toomany/a",
    "/noctx", "/rec/abc", "/rec/refuse", "/rec/ABC", "/default", "/default/1", "/default/2",
    "/multi/3/a/b/c", "/unchecked/p/q", "/decorated/4", "/string-annotation/s", "/callable",
    "/builtin")]


def host_app(rec):
    """Host matching: the root blueprint and a child on their own hosts."""
    app = app_of("hosts", host="example.com")
    api = Blueprint("api", host="api.example.com", prefix="/v1")

    @app.route("/")
    async def index(ctx):
        rec("index", snap(ctx))
        return "main site"

    @api.route("/ping")
    async def ping(ctx):
        return "pong"

    app.register_blueprint(api)
    return app


HOST_REQUESTS = [
    {"path": "/", "host": "example.com"}, {"path": "/", "host": "EXAMPLE.com:80"},
    {"path": "/", "host": "api.example.com"}, {"path": "/v1/ping", "host": "api.example.com"},
    {"path": "/v1/ping", "host": "example.com"}, {"path": "/", "host": "other.org"},
    {"path": "/"}, {"path": "/v1/ping", "host": "api.example.com", "method": "OPTIONS"},
]


class Group(RouteGroup, prefix="/group"):
    def __init__(self, rec):
        self.rec = rec

    @group_route("/hello")
    async def hello(self, ctx):
        self.rec("group", "hello", snap(ctx))
        return "group hello"

    @group_route("/item/<int:n>")
    async def item(self, ctx, n: int):
        return f"item {n}"

    @group_route("/fail")
    async def fail(self, ctx):
        raise Forbidden()

    @group_errorhandler(403)
    async def forbidden(self, ctx, exc):
        self.rec("group", "403")
        return "group forbids", 403


def group_app(rec):
    app = app_of("groups")
    app.root.add_route_group(Group(rec))

    @app.route("/")
    async def index(ctx):
        return "root"

    return app


GROUP_REQUESTS = [{"path": p} for p in ("/group/hello", "/group/item/3", "/group/item/x",
                                        "/group/fail", "/group/missing", "/")]


def signal_app(rec):
    """Listeners connected before the signals fire: in a converter (route_matched) and in a
    before-request hook (route_completed); a listener held over from an earlier request."""
    app = app_of("signals")

    class ListeningConverter(BaseConverter):
        def to_python(self, value):
            from asphalt.core import current_context
            ctx = current_context()
            ctx.route_matched.connect(lambda event: rec("matched", snap(event.ctx)))
            ctx.route_invoked.connect(lambda event: rec("invoked", snap(event.ctx)))
            return value

    app.test_map_options = {"converters": {"listen": ListeningConverter}}

    async def pre(ctx):
        ctx.route_completed.connect(lambda event: rec("completed", event.result.status))

    @app.route("/conv/<listen:x>")
    async def conv(ctx, x):
        return x

    hooked = Blueprint("hooked", prefix="/hooked")
    hooked.before_request(pre)

    @hooked.route("/")
    async def hooked_index(ctx):
        return "hooked"

    kept = []

    @app.route("/keep")
    async def keep(ctx):
        kept.append(ctx)  # this context, and its bound signals, stay alive
        ctx.route_completed.connect(lambda event: rec("kept-completed"))
        return "kept"

    @app.route("/plain")
    async def plain(ctx):
        kept.clear()  # (a bound signal's listener keeps its context alive: let it go)
        return "plain"

    app.register_blueprint(hooked)
    return app



SIGNAL_REQUESTS = [{"path": p} for p in ("/conv/a", "/hooked/", "/plain", "/keep", "/plain",
                                         "/conv/b", "/hooked/x")]

APPS = [
    (returns_app, [{"path": p} for p in RETURN_PATHS] + EDGE_REQUESTS),
    (blueprint_app, BLUEPRINT_REQUESTS + EDGE_REQUESTS[:12]),
    (arguments_app, ARGUMENT_REQUESTS),
    (host_app, HOST_REQUESTS),
    (group_app, GROUP_REQUESTS),
    (signal_app, SIGNAL_REQUESTS),
]


def _check(build, requests, **options):
    found = differences(build, requests, **options)
    assert not found, "\n\n".join(f"{r}\nstock: {e}\nfast:  {g}" for r, e, g in found[:3])


@pytest.mark.parametrize("build,requests", APPS, ids=[a[0].__name__ for a in APPS])
def test_same_as_stock(build, requests):
    # every request twice: the second is answered from what the first taught the fast path
    _check(build, requests + requests)


@pytest.mark.parametrize("build,requests", APPS[:2], ids=[a[0].__name__ for a in APPS[:2]])
def test_same_as_stock_quiet_logger_default_warnings(build, requests):
    """The Kyoukai logger at WARNING (log_route's INFO record dropped), warnings as Python's
    default filters say (the context's DeprecationWarning shown once per location)."""
    _check(build, requests, warning_filter="default", log_level=logging.WARNING)


def test_same_as_stock_when_warnings_are_errors():
    """``-W error``: the context's DeprecationWarning is raised out of both pipelines."""
    _check(returns_app, [{"path": "/"}, {"path": "/missing"}], warning_filter="error")


def test_same_as_stock_when_warnings_are_ignored():
    _check(returns_app, [{"path": "/"}, {"path": "/raise"}], warning_filter="ignore")


def test_not_finalized():
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        app = app_of("unfinalized")
        handler = request_handler(app)
        assert handler.fast
        with pytest.raises(RuntimeError, match="App was not finalized"):
            loop.run_until_complete(handler(Request(make_environ()), None))
    finally:
        loop.close()
        asyncio.set_event_loop(None)


def test_root_blueprint_swapped_at_run_time():
    def build(rec):
        app = app_of("swap")

        @app.route("/")
        async def index(ctx):
            return "first root"

        @app.route("/swap")
        async def swap(ctx):
            new_root = Blueprint("second")

            @new_root.route("/")
            async def second(ctx):
                return "second root"
            new_root.finalize()
            ctx.app._root_bp = new_root
            return "swapped"
        return app

    _check(build, [{"path": "/"}, {"path": "/swap"}, {"path": "/"}, {"path": "/swap"}])


# --- hypothesis: route tables and paths -------------------------------------------------------

_segment = st.text(alphabet=string.ascii_lowercase + "-_.~", min_size=1, max_size=4)
_rule = st.lists(st.one_of(_segment, st.sampled_from(["<int:n>", "<x>", "<path:p>",
                                                      "<float:f>"])),
                 min_size=0, max_size=3)
_rules = st.lists(st.tuples(_rule, st.booleans(),
                            st.sampled_from([("GET",), ("GET", "POST"), ("PUT",)])),
                  min_size=1, max_size=5)
_path_part = st.one_of(_segment, st.integers(-5, 500).map(str), st.sampled_from(
    ["", "1.5", "%20", "\xc3\xa9", "..", "a/b"]))
_paths = st.lists(st.tuples(st.lists(_path_part, max_size=4), st.booleans(),
                            st.sampled_from(["GET", "POST", "OPTIONS", "HEAD", "PUT", "get"])),
                  min_size=1, max_size=6)


def _table_app(rules):
    def build(rec):
        app = app_of("generated")
        bp = Blueprint("bp", prefix="/bp")
        for index, (parts, in_bp, methods) in enumerate(rules):
            names = [p.split(":")[-1][:-1] for p in parts if p.startswith("<")]
            if len(set(names)) != len(names):
                continue  # werkzeug refuses a rule with a repeated argument name

            async def endpoint(ctx, __index=index, **params):
                rec("route", __index, snap(ctx))
                return f"route {__index} {sorted(params.items())}"
            endpoint.__name__ = f"r{index}"
            route = (bp if in_bp else app.root).wrap_route(endpoint, do_argument_checking=False)
            (bp if in_bp else app.root).add_route(route, "/" + "/".join(parts), methods)
        app.register_blueprint(bp)
        return app
    return build


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules=_rules, paths=_paths)
def test_generated_route_tables(rules, paths):
    requests = [{"path": ("/bp/" if in_bp else "/") + "/".join(parts), "method": method}
                for parts, in_bp, method in paths]
    try:
        _table_app(rules)(lambda *a: None).finalize()
    except Exception:
        return  # a table werkzeug itself refuses
    _check(_table_app(rules), requests + requests)


# --- when the fast path is taken --------------------------------------------------------------

def _hello(cls=Kyoukai, **kwargs):
    if cls is Kyoukai:
        app = app_of("hello", **kwargs)
    else:
        app = cls("hello", loop=asyncio.new_event_loop(), **kwargs)

    @app.route("/")
    async def index(ctx):
        return "hi"
    app.finalize()
    return app


def test_fast_path_taken_for_a_plain_app(monkeypatch):
    """The shortcuts are taken: no stock Route.invoke, no Blueprint.match after the first
    request of a static route, no bound signal made, while the answer is stock's."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        app = _hello()
        handler = request_handler(app)
        assert handler.fast and fast_pipeline_refusal(app) is None
        from kyoukai.blueprint import Blueprint as KBlueprint
        from kyoukai.route import Route
        counts = {"invoke": 0, "match": 0}
        real_invoke, real_match = Route.invoke, KBlueprint.match

        def counting_invoke(self, *a, **kw):
            counts["invoke"] += 1
            return real_invoke(self, *a, **kw)

        def counting_match(self, environ):
            counts["match"] += 1
            return real_match(self, environ)
        monkeypatch.setattr(Route, "invoke", counting_invoke)
        monkeypatch.setattr(KBlueprint, "match", counting_match)
        signal = HTTPRequestContext.__dict__["route_completed"]
        gc.collect()  # contexts of earlier tests, and their bound signals, gone
        assert len(signal.bound_signals) == 0
        for _ in range(3):
            response = loop.run_until_complete(handler(Request(make_environ()), None))
            assert response.get_data() == b"hi"
            assert response.headers["Server"].startswith("Kyoukai/")
        assert counts == {"invoke": 0, "match": 1}
        assert len(signal.bound_signals) == 0
    finally:
        loop.close()
        asyncio.set_event_loop(None)


def test_bound_map_reused_for_dynamic_routes(monkeypatch):
    """A dynamic route's requests bind the map once per environ key and query string, while
    werkzeug matches (the converter runs) on every request; a Blueprint.match patched later is
    followed."""
    from werkzeug.routing import IntegerConverter, Map, MapAdapter

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        app = app_of("dynamic")

        @app.route("/user/<int:uid>")
        async def user(ctx, uid):
            return f"user {uid}"
        app.finalize()
        handler = request_handler(app)
        counts = {"bind": 0, "match": 0, "convert": 0, "blueprint": 0}
        real_bind, real_match = Map.bind_to_environ, MapAdapter.match
        real_convert = IntegerConverter.to_python

        def counting(name, real):
            def wrapper(*a, **kw):
                counts[name] += 1
                return real(*a, **kw)
            return wrapper
        # (bind_to_environ patched before the first request: the handler takes it as werkzeug's)
        monkeypatch.setattr(Map, "bind_to_environ", counting("bind", real_bind))
        monkeypatch.setattr(MapAdapter, "match", counting("match", real_match))
        monkeypatch.setattr(IntegerConverter, "to_python", counting("convert", real_convert))

        def get(path, **kw):
            response = loop.run_until_complete(handler(Request(make_environ(path, **kw)), None))
            return response.status_code, response.get_data()
        handler = request_handler(app)
        for uid in (1, 1, 1):
            assert get(f"/user/{uid}") == (200, f"user {uid}".encode())
        assert counts == {"bind": 1, "match": 3, "convert": 3, "blueprint": 0}
        assert get("/user/1", query_string="a=1") == (200, b"user 1")
        assert counts["bind"] == 2
        for _ in range(2):  # another host: bound once more
            assert get("/user/2", host="elsewhere.example") == (200, b"user 2")
        assert counts["bind"] == 3 and counts["convert"] == 6
        from kyoukai.blueprint import Blueprint as KBlueprint
        monkeypatch.setattr(KBlueprint, "match", counting("blueprint", KBlueprint.match))
        assert get("/user/1") == (200, b"user 1")
        assert counts["blueprint"] == 1
    finally:
        loop.close()
        asyncio.set_event_loop(None)


def test_fast_path_refused_where_it_must_be():
    class Overriding(Kyoukai):
        async def process_request(self, request, parent_context):
            return Response("mine")

    class OtherContext(HTTPRequestContext):
        pass

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        assert "overrides process_request" in fast_pipeline_refusal(_hello(Overriding))
        other = _hello(context_class=OtherContext)
        assert "context_class" in fast_pipeline_refusal(other)
        patched = _hello()
        patched.process_request = lambda request, parent: None
        assert "own process_request" in fast_pipeline_refusal(patched)
        assert "not a Kyoukai app" in fast_pipeline_refusal(object())
        for app in (_hello(Overriding), other, patched):
            assert not request_handler(app).fast
        assert not request_handler(_hello(), enabled=False).fast
        # the refused app is served by its own process_request
        response = loop.run_until_complete(
            request_handler(_hello(Overriding))(Request(make_environ()), None))
        assert response.get_data() == b"mine"
    finally:
        loop.close()
        asyncio.set_event_loop(None)


def test_patched_method_after_start_is_followed(monkeypatch):
    """Kyoukai.process_request replaced after the handler was made: the replacement runs."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        app = _hello()
        handler = request_handler(app)
        assert handler.fast

        async def replaced(self, request, parent_context):
            return Response("replaced")
        monkeypatch.setattr(Kyoukai, "process_request", replaced)
        response = loop.run_until_complete(handler(Request(make_environ()), None))
        assert response.get_data() == b"replaced"
    finally:
        loop.close()
        asyncio.set_event_loop(None)


def test_unknown_library_versions_refused(monkeypatch):
    monkeypatch.setattr(_pipeline, "_SUPPORTED", {**_pipeline._SUPPORTED, "werkzeug": ("0.1",)})
    monkeypatch.setattr(_pipeline, "_stock", None)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        reason = fast_pipeline_refusal(_hello())
        assert reason is not None and "werkzeug" in reason
        assert not request_handler(_hello()).fast
    finally:
        loop.close()
        asyncio.set_event_loop(None)


@pytest.mark.parametrize("value,off", [("1", True), ("true", True), ("YES", True), ("0", False),
                                       ("false", False), ("no", False), ("", False),
                                       (None, False)])
def test_env_switch(value, off):
    environ = {} if value is None else {"KYOUKAI_FAST_NO_PIPELINE": value}
    assert pipeline_disabled_by_env(environ) is off


def test_env_switch_refuses_other_values():
    with pytest.raises(ValueError, match="KYOUKAI_FAST_NO_PIPELINE"):
        pipeline_disabled_by_env({"KYOUKAI_FAST_NO_PIPELINE": "maybe"})


# --- through the protocols --------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:Explicitly passing the parent context:DeprecationWarning")
@pytest.mark.parametrize("fast_pipeline", [True, False])
def test_both_protocol_twins_serve_through_the_resolved_handler(impl, fast_pipeline):
    """Each twin calls its server's request handler: the fast pipeline unless it is switched
    off, and the bytes on the wire are the same either way."""
    from fakes import FakeComponent, FakeTransport
    from kyoukai_fast._config import existing_server_state

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        app = app_of("wire")

        @app.route("/")
        async def index(ctx):
            return "on the wire"

        @app.route("/user/<int:uid>")
        async def user(ctx, uid):  # (this module's annotations are strings: not checkable)
            return f"user {uid}"
        app.finalize()
        from asphalt.core import Context
        component = FakeComponent(app, server_name="127.0.0.1", fast_pipeline=fast_pipeline)
        protocol = impl.protocol_class(component, Context(), "127.0.0.1", 8080)
        transport = FakeTransport()
        protocol.connection_made(transport)
        assert existing_server_state(component).request_handler.fast is fast_pipeline

        async def exchange():
            for target in ("/", "/user/5", "/nope", "/"):
                protocol.data_received(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            for _ in range(5):
                await asyncio.sleep(0)
        loop.run_until_complete(exchange())
        data = transport.take()
        assert data.count(b"HTTP/1.1 200 OK") == 3 and b"HTTP/1.1 404 NOT FOUND" in data
        assert b"on the wire" in data and b"user 5" in data
        assert data.count(b"Server: Kyoukai/") == 3
        protocol.connection_lost(None)
    finally:
        loop.close()
        asyncio.set_event_loop(None)


@pytest.mark.filterwarnings("ignore:Explicitly passing the parent context:DeprecationWarning")
@pytest.mark.parametrize("fast_pipeline", [True, False])
def test_http2_serves_through_the_resolved_handler(fast_pipeline):
    """The HTTP/2 protocol calls the same per-server request handler as the HTTP/1.1 twins."""
    import h2.config
    import h2.connection
    import h2.events
    from asphalt.core import Context

    from fakes import FakeComponent, FakeTransport
    from kyoukai_fast._config import existing_server_state
    from kyoukai_fast._http2 import HTTP2Protocol

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        app = app_of("h2")

        @app.route("/user/<int:uid>")
        async def user(ctx, uid):
            return f"user {uid}"
        app.finalize()
        component = FakeComponent(app, server_name="127.0.0.1", fast_pipeline=fast_pipeline)
        protocol = HTTP2Protocol(component, Context(), 8080)
        transport = FakeTransport()
        protocol.connection_made(transport)
        state = existing_server_state(component)
        assert state.request_handler.fast is fast_pipeline
        seen = []
        resolved = state.request_handler

        def spy(request, parent_context):
            seen.append(request.path)
            return resolved(request, parent_context)
        state.request_handler = spy

        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        client.initiate_connection()
        client.send_headers(1, [(":method", "GET"), (":path", "/user/5"), (":scheme", "http"),
                                (":authority", "x")], end_stream=True)

        async def exchange():
            protocol.data_received(client.data_to_send())
            for _ in range(5):
                await asyncio.sleep(0)
        loop.run_until_complete(exchange())
        events = client.receive_data(transport.take())
        headers = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
        body = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
        assert seen == ["/user/5"]
        assert dict(headers[0].headers)[b":status"] == b"200" and body == b"user 5"
        protocol.connection_lost(None)
    finally:
        loop.close()
        asyncio.set_event_loop(None)


def _stock_process_request_running() -> bool:
    """Whether Kyoukai's own process_request is on the calling route's (coroutine) call chain."""
    frame = sys._getframe(1)
    while frame is not None:
        if (frame.f_code.co_name == "process_request"
                and frame.f_globals.get("__name__") == "kyoukai.app"):
            return True
        frame = frame.f_back
    return False


@pytest.mark.filterwarnings("ignore:Explicitly passing the parent context:DeprecationWarning")
@pytest.mark.parametrize("fast_pipeline", [True, False])
def test_each_request_is_seen_with_the_fast_pipeline_left_live(impl, fast_pipeline):
    """ServerState.on_each_request (gunicorn's max_requests counting) sees every request of
    every connection, including one made before the callback was added, and the requests are
    still served by the fast pipeline: the app is not patched."""
    from fakes import FakeComponent, FakeTransport
    from kyoukai_fast._config import existing_server_state

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        app = app_of("counted")
        served, stock = [], []

        @app.route("/user/<int:uid>")
        async def user(ctx, uid):
            served.append(uid)
            stock.append(_stock_process_request_running())
            return f"user {uid}"
        app.finalize()
        from asphalt.core import Context
        component = FakeComponent(app, server_name="127.0.0.1", fast_pipeline=fast_pipeline)
        early = impl.protocol_class(component, Context(), "127.0.0.1", 8080)
        early_transport = FakeTransport()
        early.connection_made(early_transport)
        state = existing_server_state(component)
        assert state.request_handler.fast is fast_pipeline
        seen = []
        state.on_each_request(lambda: seen.append(list(served)))
        assert state.request_handler.fast is fast_pipeline
        late = impl.protocol_class(component, Context(), "127.0.0.1", 8080)
        late_transport = FakeTransport()
        late.connection_made(late_transport)

        async def exchange():
            for uid, protocol in ((1, early), (2, late), (3, early)):
                protocol.data_received(f"GET /user/{uid} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            for _ in range(5):
                await asyncio.sleep(0)
        loop.run_until_complete(exchange())
        # Each callback ran before its request reached the route.
        assert seen == [[], [1], [1, 2]] and served == [1, 2, 3]
        assert stock == [not fast_pipeline] * 3
        assert early_transport.take().count(b"HTTP/1.1 200 OK") == 2
        assert b"user 2" in late_transport.take()
        early.connection_lost(None)
        late.connection_lost(None)
    finally:
        loop.close()
        asyncio.set_event_loop(None)
