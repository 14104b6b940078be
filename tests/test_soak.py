"""
``bench/soak.py`` in miniature, so the soak command cannot rot: a few thousand mixed requests
(keep-alive, pipelined, HTTP/1.0, malformed, disconnecting clients) against a real server on
127.0.0.1, every response checked, RSS compared, exit status 0 only when nothing was lost.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from fakes import IMPLEMENTATIONS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOAK = os.path.join(ROOT, "bench", "soak.py")


def soak(*args, timeout=150):
    return subprocess.run([sys.executable, SOAK, "--time-limit", "100", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("impl_name, app", [("cython", "kyoukai"), ("python", "minimal")])
def test_soak_small_run_loses_nothing(impl_name, app):
    impl = next(i for i in IMPLEMENTATIONS if i.name == impl_name)
    if not impl.available:
        pytest.fail(f"the {impl_name} implementation did not load: {impl.error}")
    result = soak("--requests", "2000", "--impl", impl_name, "--app", app)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"{impl_name} backend, {app} app" in out
    summary = re.search(r"soak: (\d+) requests sent in .*: (\d+) answered and checked, "
                        r"(\d+) abandoned by the client on purpose, (\d+) lost", out)
    assert summary, out
    sent, answered, aborted, lost = map(int, summary.groups())
    assert sent >= 2000 and lost == 0
    assert answered + aborted == sent and answered > 1500
    assert "soak: OK" in out


def test_soak_fails_on_rss_growth_beyond_the_limit():
    # A limit no run can meet: the RSS check must turn it into a failing exit status.
    result = soak("--requests", "300", "--app", "minimal", "--impl", "python",
                  "--rss-limit-mib", "-1000")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "RSS grew" in result.stderr and "0 lost" in result.stdout


SOAK_HTTP2 = os.path.join(ROOT, "bench", "soak_http2.py")


@pytest.mark.parametrize("impl_name", ["cython", "python"])
def test_http2_soak_small_run_keeps_memory_flat(impl_name):
    """``bench/soak_http2.py`` in miniature: requests on one HTTP/2 connection, RSS compared."""
    impl = next(i for i in IMPLEMENTATIONS if i.name == impl_name)
    if not impl.available:
        pytest.fail(f"the {impl_name} implementation did not load: {impl.error}")
    result = subprocess.run([sys.executable, SOAK_HTTP2, "--requests", "3000", "--impl",
                             impl_name], capture_output=True, text=True, timeout=150, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    # the server selects its engine as this process does (the pure twin: h2)
    from kyoukai_fast._http2_engine import ENGINE_NAME

    engine = ENGINE_NAME if impl_name == "cython" else "h2"
    assert (f"{impl_name} ({engine} engine): 3,000 of 3,000 requests succeeded on one "
            "connection") in result.stdout, result.stdout


def test_http2_soak_fails_on_rss_growth_beyond_the_limit():
    result = subprocess.run([sys.executable, SOAK_HTTP2, "--requests", "300", "--impl", "python",
                             "--rss-limit-mib", "-1000"], capture_output=True, text=True,
                            timeout=150, cwd=ROOT)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "300 of 300 requests succeeded" in result.stdout
