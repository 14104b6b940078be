"""
Shared fixtures: every protocol test runs against both implementations (``impl``); a
self-signed ``certificate``; ``clock``; ``no_errors_logged``.

``impl`` is parametrized over the compiled (``cython``) and pure-Python (``python``) modules. When
``KYOUKAI_FAST_EXPECT_COMPILED`` is set (``make test`` sets it) a missing compiled module fails
the cython cases instead of skipping them.

``http2_impl``: the same, each twin paired with the HTTP/2 engine it selects (compiled:
libnghttp2's, pure-Python: h2's), so that every HTTP/2 test runs on both engines at no extra
cost; ``impl.http2_engine`` names it. A test module takes it as its ``impl`` with
``impl`` fixture returning ``http2_impl``.
"""
from __future__ import annotations

import dataclasses
import importlib
import logging

import pytest

import kyoukai_fast.compat

kyoukai_fast.compat.apply()  # stock Kyoukai on Python 3.10+ / werkzeug 3

from fakes import EXPECT_COMPILED, IMPLEMENTATIONS, Clock, Implementation  # noqa: E402
from loopback import make_certificate  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "source_tree: checks the source checkout (README, examples/, installing it)")


def pytest_collection_modifyitems(config, items):
    """Against an installed wheel there is no checkout: its tests are deselected, not skipped."""
    from procs import INSTALLED

    if not INSTALLED:
        return
    kept, dropped = [], []
    for item in items:
        (dropped if item.get_closest_marker("source_tree") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(params=[impl.name for impl in IMPLEMENTATIONS])
def impl(request) -> Implementation:
    """One implementation (``impl.protocol_class``, ``impl.to_wsgi_environment``, ...)."""
    return _loaded(request.param)


def _loaded(name) -> Implementation:
    chosen = next(i for i in IMPLEMENTATIONS if i.name == name)
    if not chosen.available:
        if EXPECT_COMPILED:
            pytest.fail(f"the {chosen.name} implementation was expected but did not load: "
                        f"{chosen.error}")
        pytest.skip(f"{chosen.name} implementation not built")
    return chosen


HTTP2_PAIRS = [("cython", "nghttp2"), ("python", "h2")]


@pytest.fixture(params=HTTP2_PAIRS, ids=[f"{i}-{e}" for i, e in HTTP2_PAIRS])
def http2_impl(request, monkeypatch) -> Implementation:
    """An implementation whose HTTP/2 connections run on the engine it pairs with."""
    impl_name, engine_name = request.param
    chosen = _loaded(impl_name)
    from kyoukai_fast._http2 import HTTP2Protocol

    if engine_name == "nghttp2":
        try:
            engine = importlib.import_module("kyoukai_fast._http2_nghttp2").Nghttp2Engine
        except ImportError as exc:
            if EXPECT_COMPILED:
                pytest.fail(f"the nghttp2 HTTP/2 engine was expected but did not load: {exc}")
            pytest.skip("the nghttp2 HTTP/2 engine is not built")
    else:
        from kyoukai_fast._http2_h2 import H2Engine as engine
    monkeypatch.setattr(HTTP2Protocol, "engine_class", engine)
    return dataclasses.replace(chosen, http2_engine=engine_name)


@pytest.fixture
def clock(impl, monkeypatch) -> Clock:
    """The time ``impl``'s protocol reads, for the test to move (see :class:`fakes.Clock`)."""
    from kyoukai_fast import _connection

    clock = Clock()
    # the twin's hot path and the shared connection layer read the same clock
    monkeypatch.setattr(impl.protocol_module, "_monotonic", clock)
    monkeypatch.setattr(_connection, "_monotonic", clock)
    return clock


@pytest.fixture(scope="session")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1: ``(cert.pem, key.pem)`` (openssl, bounded)."""
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def no_errors_logged(caplog):
    """Fails the test if anything was logged at ERROR or above (a refusal is not an error)."""
    caplog.set_level(logging.INFO)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
