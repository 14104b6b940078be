"""The twins keep only the hot path; the cold behaviour and what the WSGI twins share exist once."""
from __future__ import annotations

import ast
import asyncio
import io
import re
from pathlib import Path

import pytest
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Request, Response

from fakes import IMPLEMENTATIONS
from kyoukai_fast import _connection, _protocol_py, _request_cycle, _wsgi_py
from kyoukai_fast._input import EMPTY_INPUT

SOURCE = Path(_connection.__file__).parent

#: What both protocol twins may define: the hot path, where the compiled twin differs in how.
HOT_PATH = {
    "__init__", "get_buffer", "buffer_updated", "data_received",
    "on_message_begin", "on_url", "on_header", "on_headers_complete", "on_body",
    "on_message_complete",
    "_enqueue", "_run_queue", "_drain_queue", "_start_request", "_write_result", "_raw_write",
    "_flush",
}

COLD = {name for name, value in vars(_connection.HTTPConnection).items()
        if callable(value) or isinstance(value, staticmethod)}


def _own_methods(cls) -> set:
    return {name for name, value in vars(cls).items()
            if (callable(value) or isinstance(value, (staticmethod, property)))
            and not (name.startswith("__") and name != "__init__")}


def _twin_classes():
    classes = [("python", _protocol_py.KyoukaiProtocol)]
    compiled = next(impl for impl in IMPLEMENTATIONS if impl.name == "cython")
    if compiled.available:
        classes.append(("cython", compiled.protocol_module.HTTPProtocolCore))
    return classes


def test_the_connection_layer_is_implemented_once():
    assert {"connection_made", "connection_lost", "pause_writing", "resume_writing",
            "_flow_control", "_pause_reading", "_resume_reading", "_stream_write", "_linger",
            "_refuse", "check_timeouts", "shutdown", "close", "_on_upgrade", "_feed_in_slices",
            "_handler_done", "_parse_error"} <= COLD
    for name, cls in _twin_classes():
        own = _own_methods(cls)
        assert not own & COLD, (name, own & COLD)  # a twin redefining one would let them drift


def test_both_twins_inherit_the_connection_layer(impl):
    assert issubclass(impl.protocol_class, _connection.HTTPConnection)
    for name in COLD:
        assert getattr(impl.protocol_class, name) is getattr(_connection.HTTPConnection, name)


def test_what_both_twins_define_is_only_the_hot_path():
    classes = _twin_classes()
    if len(classes) < 2:
        pytest.skip("the compiled twin is not built")  # test_implementation fails that build
    (_, pure), (_, compiled) = classes
    common = _own_methods(pure) & _own_methods(compiled)
    assert common <= HOT_PATH, common - HOT_PATH


def _imports(path: Path) -> set:
    text = path.read_text()
    if path.suffix == ".py":
        names = set()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom):
                names.add(node.module or "")
                names.update("." + alias.name for alias in node.names if not node.module)
        return names
    return set(re.findall(r"^from \.?(\S*) c?import", text, re.M)) | {
        "." + name.strip() for line in re.findall(r"^from \. c?import (.+)$", text, re.M)
        for name in line.split(",")}


@pytest.mark.parametrize("name", ["_wsgi_c.pyx", "_protocol_c.pyx", "_config.py", "_errors.py",
                                  "_connection.py", "_request_cycle.py", "_environ.py",
                                  "_rendering.py"])
def test_nothing_but_its_selector_and_its_protocol_imports_the_pure_wsgi_twin(name):
    assert not {"_wsgi_py", "._wsgi_py"} & _imports(SOURCE / name)


def test_parsing_policy_is_not_in_the_settings_module():
    from kyoukai_fast import _config

    assert not hasattr(_config, "FEED_SLICE") and not hasattr(_config, "slice_end")


# --- the request cycle --------------------------------------------------------------------------

def test_set_input_joins_and_decodes_the_body():
    import gzip

    environ = {"HTTP_CONTENT_ENCODING": "gzip"}
    data = gzip.compress(b"hello world")
    _request_cycle.set_input(environ, [data[:5], data[5:]], 1024)
    assert environ["wsgi.input"].read() == b"hello world"
    assert environ["CONTENT_LENGTH"] == "11"
    environ = {}
    _request_cycle.set_input(environ, None, 1024)
    assert environ["wsgi.input"] is EMPTY_INPUT
    with pytest.raises(RequestEntityTooLarge):
        _request_cycle.set_input({"HTTP_CONTENT_ENCODING": "gzip"},
                                 [gzip.compress(b"x" * 5000)], 1024)


class _App:
    request_class = Request

    def __init__(self, suspend):
        self.suspend = suspend
        self.seen = []

    async def process_request(self, request, parent_context):
        self.seen.append((request.path, parent_context))
        if self.suspend:
            await asyncio.sleep(0)
        return Response("done")


def test_start_handler_finishes_a_handler_that_does_not_suspend():
    async def main():
        app = _App(suspend=False)
        environ = _wsgi_py.to_wsgi_environment([], "GET", "/a", "1.1")
        request = _wsgi_py.new_request(Request, environ)
        task, response, error = _request_cycle.start_handler(
            app.process_request, request, "ctx", asyncio.get_running_loop())
        assert task is None and error is None
        assert response.get_data() == b"done" and app.seen == [("/a", "ctx")]

    asyncio.run(main())


def test_start_handler_hands_back_the_task_of_a_suspended_handler():
    async def main():
        app = _App(suspend=True)
        environ = _wsgi_py.to_wsgi_environment([], "GET", "/b", "1.1")
        request = _wsgi_py.new_request(Request, environ)
        task, value, error = _request_cycle.start_handler(
            app.process_request, request, None, asyncio.get_running_loop())
        assert isinstance(task, asyncio.Task) and value is None and error is None
        return (await task).get_data()

    assert asyncio.run(main()) == b"done"


def test_final_response_parts_leaves_framing_to_the_caller():
    environ = _wsgi_py.to_wsgi_environment([], "GET", "/", "1.1")
    status, headers, body, app_iter = _request_cycle.final_response_parts(
        Response("hi", headers={"X-A": "1"}), environ)
    assert status == "200 OK" and ("X-A", "1") in headers and body == b"hi" and app_iter is None

    closed = []

    class Body(io.BytesIO):
        def __iter__(self):
            yield b"x"

        def close(self):
            closed.append(True)

    head = _wsgi_py.to_wsgi_environment([], "HEAD", "/", "1.1")
    status, _, body, app_iter = _request_cycle.final_response_parts(
        Response(Body(), direct_passthrough=True), head)
    assert body == b"" and app_iter is None and closed  # closed: it never goes out
    with pytest.raises(ValueError, match="interim"):
        _request_cycle.final_response_parts(Response("", status=103), environ)


def test_response_or_error_answers_none_with_a_500(caplog):
    class Req:
        method = "GET"
        environ = _wsgi_py.to_wsgi_environment([], "GET", "/x", "1.1")

    response = Response("ok")
    assert _request_cycle.response_or_error(response, Req) is response
    assert _request_cycle.response_or_error(None, Req).status_code == 500
    assert "returned no response" in caplog.text
