"""
Micro ratios for the load report: environ construction and response formatting of each
implementation on the same request, timed with ``timeit`` (``bench/test_micro.py`` has the
pytest-benchmark versions).
"""
from __future__ import annotations

import os
import sys
import timeit

HERE = os.path.dirname(os.path.abspath(__file__))


def micro_ratios(seconds: float) -> dict:
    """Compiled vs stock: environ construction and response formatting (timeit, best of 5)."""
    sys.path.insert(0, HERE)
    from werkzeug.wrappers import Response

    import _support

    out = {}
    environ = _support.IMPLEMENTATIONS["python"][1].to_wsgi_environment(
        _support.REQUEST_HEADERS, "GET", _support.REQUEST_TARGET, "1.1")
    response = Response("Hello, world!")
    for name in ("cython", "python", "stock"):
        if _support.IMPLEMENTATIONS[name] is None:
            continue
        wsgi = _support.IMPLEMENTATIONS[name][1]
        cases = {
            "environ": lambda w=wsgi: w.to_wsgi_environment(
                _support.REQUEST_HEADERS, "GET", _support.REQUEST_TARGET, "1.1", None),
            "format": lambda w=wsgi: w.get_formatted_response(response, environ),
        }
        for case, func in cases.items():
            timer = timeit.Timer(func)
            number, _ = timer.autorange()
            number = max(1, int(number * seconds / 0.2))
            best = min(timer.repeat(5, number)) / number
            out.setdefault(case, {})[name] = best * 1e9
    return out
