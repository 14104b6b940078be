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
    and as cheap (server CPU per request)."""

    description: str
    server: str
    other: str
    minimum: float


RATIOS = (
    Ratio("compiled minimal app vs floor", "fast-c-minimal", "floor", 0.5),
    Ratio("compiled minimal app vs stock", "fast-c-minimal", "stock-minimal", 5),
    Ratio("compiled minimal app vs uvicorn", "fast-c-minimal", "uvicorn", 2),
    Ratio("pure-Python minimal app vs stock", "fast-py-minimal", "stock-minimal", 2),
    Ratio("real Kyoukai hello-world vs stock", "fast-kyoukai", "stock-kyoukai", 2),
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
