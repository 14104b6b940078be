"""
The benchmark targets, in one place: what ``bench/load.py``'s report checks a run against.

Every ratio is measured on the asyncio loop, 64 connections, side by side in one run; the server
CPU per request ratios are the ones that hold on a shared, noisy machine.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Ratio:
    """``server`` against ``other``, no pipelining: at least ``minimum`` times as fast (req/s)
    and as cheap (server CPU per request), or with ``cpu_only`` as cheap only."""

    description: str
    server: str
    other: str
    minimum: float
    cpu_only: bool = False


RATIOS = (
    Ratio("compiled minimal app vs floor", "fast-c-minimal", "floor", 0.5),
    Ratio("compiled minimal app vs stock", "fast-c-minimal", "stock-minimal", 5),
    Ratio("compiled minimal app vs uvicorn", "fast-c-minimal", "uvicorn", 2),
    Ratio("pure-Python minimal app vs stock", "fast-py-minimal", "stock-minimal", 2),
    Ratio("real Kyoukai hello-world vs stock", "fast-kyoukai", "stock-kyoukai", 2),
    # The fast request pipeline's: Kyoukai apps on kyoukai_fast against stock Kyoukai (its
    # backend and pipeline), and the hello app against what a user would pick instead.
    Ratio("Kyoukai hello-world, fast pipeline vs stock", "fast-kyoukai", "stock-kyoukai", 5,
          cpu_only=True),
    Ratio("Kyoukai hello-world, pure-Python, fast pipeline vs stock", "fast-py-kyoukai",
          "stock-kyoukai", 3, cpu_only=True),
    Ratio("realistic Kyoukai app vs stock", "fast-kyoukai-realistic",
          "stock-kyoukai-realistic", 3, cpu_only=True),
    Ratio("Kyoukai hello-world vs Starlette on uvicorn", "fast-kyoukai", "starlette", 1.5),
)

#: The compiled server, 16-deep pipelined, against itself without pipelining (req/s).
PIPELINING_GAIN = 1.5
#: Micro benchmarks (environ construction, response formatting): compiled against stock.
MICRO_MINIMUM = 10
#: Bytes an idle keep-alive connection of the compiled server may cost above the floor's.
IDLE_BYTES_ABOVE_FLOOR = 512
#: The ratios whose ceiling the report works out (what a backend costing nothing could reach).
CEILINGS = ("compiled minimal app vs floor", "compiled minimal app vs stock",
            "compiled minimal app vs uvicorn", "real Kyoukai hello-world vs stock")


def ratio(description: str) -> Ratio:
    return next(r for r in RATIOS if r.description == description)

#: HTTP/2 over TLS (bench/http2_load.py): the compiled server's HTTP/2 CPU per request at most
#: this many times its HTTP/1.1-over-TLS one, and at least this many times hypercorn's HTTP/2
#: throughput (minimal apps, 64 streams or connections).
HTTP2_TARGETS = {"cpu_vs_http11_tls": 1.5, "throughput_vs_hypercorn": 2}
