"""
Shared fixtures: every protocol test runs against both implementations.

``impl`` is parametrized over the compiled (``cython``) and pure-Python (``python``) modules. When
``KYOUKAI_FAST_EXPECT_COMPILED`` is set (``make test`` sets it) a missing compiled module fails
the cython cases instead of skipping them.
"""
from __future__ import annotations

import os
import subprocess

import pytest

import kyoukai_fast.compat

kyoukai_fast.compat.apply()  # stock Kyoukai on Python 3.10+ / werkzeug 3

from helpers import IMPLEMENTATIONS, Implementation  # noqa: E402

EXPECT_COMPILED = bool(os.environ.get("KYOUKAI_FAST_EXPECT_COMPILED"))


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
    chosen = next(i for i in IMPLEMENTATIONS if i.name == request.param)
    if not chosen.available:
        if EXPECT_COMPILED:
            pytest.fail(f"the {chosen.name} implementation was expected but did not load: "
                        f"{chosen.error}")
        pytest.skip(f"{chosen.name} implementation not built")
    return chosen


@pytest.fixture(scope="session")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1: ``(cert.pem, key.pem)`` (openssl, bounded)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key
