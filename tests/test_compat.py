"""
kyoukai_fast.compat: each patch is needed here (stock Kyoukai fails without it, shown in a fresh
interpreter that applies every patch but that one), works (the real app answers right through
KyoukaiComponent + kyoukai_fast), and does nothing where it is not needed.
"""
from __future__ import annotations

import collections
import json
import sys

import pytest

from kyoukai_fast import compat
from procs import TESTS, env, run

ALL = ("collections_aliases", "form_parser", "component_loop", "error_response")


def probe(backend: str, *patches: str, pure: bool = False) -> dict:
    """Serve a real Kyoukai app in a fresh interpreter with only ``patches`` applied."""
    result = run([sys.executable, TESTS / "compat_probe.py", backend, *patches],
                 env=env(pure=pure), timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def fresh(code: str) -> str:
    result = run([sys.executable, "-c", code], env=env(), timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def backend(impl):
    return impl.protocol_module.__name__


def test_all_patches_make_stock_kyoukai_serve(backend, impl):
    report = probe(backend, *ALL, pure=impl.name == "python")
    assert "error" not in report and "import_error" not in report, report
    responses = report["responses"]
    assert responses["GET /"][::2] == [200, "index"]
    assert responses["GET /users/5"][::2] == [200, "user 5"]
    assert responses["GET /missing"][0] == 404 and "Not Found" in responses["GET /missing"][2]
    status, allow, page = responses["POST /"]
    assert status == 405 and "GET" in allow and "Method Not Allowed" in page
    assert responses["GET /teapot"][0] == 418  # abort() inside a route keeps its code


def test_collections_aliases_are_needed_for_every_route(backend):
    report = probe(backend, "form_parser", "component_loop", "error_response")
    # Route.invoke checks isinstance(params, collections.Mapping) for every route.
    assert report["responses"]["GET /"][0] == 500
    assert report["responses"]["GET /users/5"][0] == 500


def test_form_parser_table_is_needed_to_import_kyoukai(backend):
    from werkzeug.formparser import FormDataParser

    report = probe(backend, "collections_aliases", "component_loop", "error_response")
    has_table = fresh("from werkzeug.formparser import FormDataParser; "
                      "print(hasattr(FormDataParser, 'parse_functions'))")
    if has_table == "True":  # werkzeug 2.x: Kyoukai imports without help
        assert "import_error" not in report
    else:  # werkzeug 3
        assert "parse_functions" in report["import_error"]
        assert hasattr(FormDataParser, "parse_functions")  # patched in this process


def test_error_response_patch_is_needed_for_404_and_405(backend):
    report = probe(backend, "collections_aliases", "form_parser", "component_loop")
    responses = report["responses"]
    # Stock Kyoukai turns every plain HTTP error into a 500.
    assert responses["GET /missing"][0] == 500
    assert responses["POST /"][0] == 500
    assert responses["GET /teapot"][0] == 500
    assert responses["GET /"][0] == 200


def test_patches_report_what_they_change_and_are_idempotent():
    out = fresh("import json, kyoukai_fast.compat as c; "
                "print(json.dumps([c.apply(), c.apply()]))")
    first, second = json.loads(out)
    assert second == {name: False for name in ALL}
    assert first["error_response"] is True  # the bug is in every stock 2.2.1.post1
    assert first["component_loop"] is True
    assert first["collections_aliases"] is (sys.version_info >= (3, 10))


def test_collections_aliases_leave_existing_names_alone(monkeypatch):
    sentinel = object()
    monkeypatch.setattr(collections, "Mapping", sentinel, raising=False)
    compat.patch_collections_aliases()
    assert collections.Mapping is sentinel
    assert collections.MutableMapping is collections.abc.MutableMapping


def test_form_parser_leaves_an_existing_table_alone():
    from werkzeug.formparser import FormDataParser

    table = FormDataParser.parse_functions  # werkzeug 2.x's own, or the one apply() added
    assert compat.patch_form_parser() is False
    assert FormDataParser.parse_functions is table


def test_error_response_patch_leaves_a_fixed_kyoukai_alone(monkeypatch):
    from kyoukai.app import Kyoukai

    async def fixed(self, ctx, exception, environ=None):  # a Kyoukai without the bug
        return exception.get_response(environ)

    monkeypatch.setattr(Kyoukai, "handle_httpexception", fixed)
    assert compat.answers_plain_404(fixed) is True
    assert compat.patch_error_response() is False
    assert Kyoukai.handle_httpexception is fixed


def test_the_probe_sees_the_stock_bug():
    out = fresh("from kyoukai_fast import compat; compat.patch_collections_aliases(); "
                "compat.patch_form_parser(); from kyoukai.app import Kyoukai; "
                "print(compat.answers_plain_404(Kyoukai.handle_httpexception))")
    assert out == "False"


RUN_APP = """
import sys
from kyoukai_fast import compat
for name in sys.argv[2:]:
    getattr(compat, "patch_" + name)()
from kyoukai import Kyoukai, KyoukaiComponent
app = Kyoukai("run-probe")

@app.route("/")
async def index(ctx):
    return "served by Kyoukai.run"

app.run(component=KyoukaiComponent(app, "127.0.0.1", int(sys.argv[1]), backend="kyoukai_fast"))
"""


def kyoukai_run(*patches):
    """``Kyoukai.run()`` (Asphalt's runner, a loop of its own) in a fresh interpreter."""
    from procs import free_port_server

    return free_port_server([sys.executable, "-c", RUN_APP], list(patches),
                            ready=r"Application started")


def test_component_loop_patch_is_needed_for_kyoukai_run():
    from procs import request

    with kyoukai_run("collections_aliases", "form_parser", "error_response") as (server, port):
        # The server listens (the kernel accepts) but its loop never runs: no answer.
        with pytest.raises(TimeoutError):
            request(port, "GET", "/", timeout=1.5)
    with kyoukai_run(*ALL) as (server, port):
        assert request(port, "GET", "/")[::2] == (200, b"served by Kyoukai.run")


def test_component_loop_patch_leaves_the_running_loop_alone():
    import asyncio

    from asphalt.core import Context
    from kyoukai import Kyoukai, KyoukaiComponent

    async def main():
        loop = asyncio.get_running_loop()
        app = Kyoukai("same-loop", loop=loop)
        component = KyoukaiComponent(app, "127.0.0.1", 0, backend="kyoukai_fast",
                                     run_server=False)
        async with Context() as ctx:
            await component.start(ctx)
        return app.loop is loop

    assert asyncio.run(main())
