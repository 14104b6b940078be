#!/usr/bin/env python
"""
The server CPU one setting costs per request, from a load run of two servers that differ only in
it: round by round (bench/load.py interleaves rounds, so round k of both ran under the same
machine load), the difference of their server CPU per request; the median of those differences
and their spread, which is steadier than the difference of the two medians on a busy machine.

    python bench/load.py --servers fast-c-minimal,fast-c-minimal-access-log --loop asyncio \\
        --pipeline 1 --rounds 15 --duration 2 --no-memory --no-micro --no-http2 --no-docs
    python bench/paired_cpu.py fast-c-minimal fast-c-minimal-access-log
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from processes import RESULTS  # noqa: E402


def paired(rows: list, base: str, other: str, loop: str = "asyncio", depth: int = 1) -> dict:
    """``{"base", "other", "differences", "median", "low", "high"}`` in µs per request."""
    def cpu_rounds(server):
        for row in rows:
            if (row["server"], row["loop"], row["pipeline"]) == (server, loop, depth):
                return row["cpu_rounds"]
        raise SystemExit(f"no {server} ({loop}, pipeline {depth}) in the results")

    first, second = cpu_rounds(base), cpu_rounds(other)
    differences = sorted(b - a for a, b in zip(first, second))
    quartiles = statistics.quantiles(differences, n=4) if len(differences) > 1 else differences
    return {"base": statistics.median(first), "other": statistics.median(second),
            "differences": differences, "median": statistics.median(differences),
            "low": quartiles[0], "high": quartiles[-1]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("base")
    parser.add_argument("other")
    parser.add_argument("--loop", default="asyncio")
    parser.add_argument("--pipeline", type=int, default=1)
    parser.add_argument("--results", default=os.path.join(RESULTS, "load.json"))
    args = parser.parse_args(argv)
    with open(args.results) as f:
        rows = json.load(f)["rows"]
    result = paired(rows, args.base, args.other, args.loop, args.pipeline)
    print(f"{args.base}: {result['base']:.1f} µs/request, {args.other}: "
          f"{result['other']:.1f} (medians of {len(result['differences'])} rounds)")
    print(f"{args.other} - {args.base}, round by round: median {result['median']:+.1f} µs, "
          f"quartiles {result['low']:+.1f} .. {result['high']:+.1f}")
    print("differences: " + ", ".join(f"{d:+.1f}" for d in result["differences"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
