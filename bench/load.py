#!/usr/bin/env python
"""
Loopback load benchmark: every server of ``bench/servers.py`` side by side, loaded with wrk.

    python bench/load.py            # full run: asyncio + uvloop, with and without pipelining
    python bench/load.py --quick    # a short run: asyncio only, 1 round of 2 s
    python bench/load.py --memory-only

Rounds are interleaved (A B C ... A B C ...) so drift of a shared machine hits every server
alike; the table gives the median requests/s, the median p99 latency, the server CPU per request
and the ratios to the floor and to stock Kyoukai. A separate correctness pass checks with a wrk
Lua ``response`` hook that every response is a 200 with the expected body, pipelined too (the
realistic app's servers get a mix of requests, each answer checked in every run). Then
the RSS growth per idle keep-alive connection and the micro ratios, all checked against
``bench/targets.py``. Results: ``bench/results/load.{md,json,png}``; a full run also rewrites
the generated part of ``docs/benchmarks.md`` (``--docs`` / ``--no-docs`` to choose).

Then HTTP/2 over TLS with h2load, hypercorn as the peer (``bench/http2_load.py``;
``--http2-only`` runs just that part, ``--no-http2`` skips it): ``bench/results/http2.*``.

The parts: ``servers.py`` (what is served), ``processes.py`` (server processes, tools),
``loadgen.py`` (wrk scripts, the Python fallback), ``idle_rss.py`` (memory), ``micro.py``
(micro ratios), ``report.py`` (tables, targets, chart), ``targets.py`` (the goals).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

import http2_load
from idle_rss import measure_idle_memory
from loadgen import LoadGenerator
from micro import micro_ratios
from processes import RESULTS, Server, ensure_wrk, log
from report import DOCS, summarize, update_docs, write_results
from servers import DEFAULT_SERVERS, LOG_SERVERS, LOOPS, REALISTIC_SERVERS, SERVERS, serve

#: Servers whose idle-connection memory is measured.
MEMORY_SERVERS = ("floor", "stock-minimal", "fast-c-minimal", "fast-py-minimal")


def run_rounds(generator: LoadGenerator, loops, servers, depths, rounds_per_depth: int,
               duration: float, output: str):
    """Warm-up, a correctness pass and ``rounds_per_depth`` interleaved rounds for every loop
    and pipelining depth: ``(rounds, correctness)`` as :func:`report.summarize` takes them."""
    from _support import REALISTIC_ANSWERS

    answers = {kind: REALISTIC_ANSWERS for kind in servers if kind in REALISTIC_SERVERS}
    rounds: dict = {}
    correctness: dict = {}
    total = len(loops) * len(depths) * rounds_per_depth * len(servers)
    step = 0
    for loop_name in loops:
        log(f"starting {len(servers)} servers on {loop_name}")
        running = {kind: Server(kind, loop_name, output) for kind in servers}
        try:
            for depth in depths:
                for kind, server in running.items():  # warm-up and correctness
                    generator.run(server.port, depth, 1.0, answers=answers.get(kind))
                    check = generator.run(server.port, depth, 1.0, check=True,
                                          answers=answers.get(kind))
                    correctness[(loop_name, depth, kind)] = check
                    log(f"  check {loop_name:8} pipeline={depth:<2} {kind:16} "
                        f"ok={check['ok']:,} bad={check['bad']:,}")
                for round_index in range(rounds_per_depth):
                    for kind, server in running.items():
                        step += 1
                        cpu_before = server.cpu_seconds()
                        faults_before = server.page_faults()
                        result = generator.run(server.port, depth, duration,
                                               answers=answers.get(kind))
                        # CPU time per request: steadier than req/s on a shared machine, where
                        # a server gets only part of a core.
                        requests = max(1, result["requests"])
                        result["cpu_us"] = (server.cpu_seconds() - cpu_before) / requests * 1e6
                        result["faults_per_request"] = ((server.page_faults() - faults_before)
                                                        / requests)
                        rounds.setdefault((loop_name, depth), {}).setdefault(
                            kind, []).append(result)
                        log(f"[{step:3}/{total}] {loop_name:8} pipeline={depth:<2} "
                            f"round {round_index + 1} {kind:16} "
                            f"{result['rps']:10,.0f} req/s  p99 "
                            f"{result['p99_us'] / 1000:7.2f} ms  server CPU "
                            f"{result['cpu_us']:6.1f} µs/request")
        finally:
            for server in running.values():
                server.stop()
    return rounds, correctness


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--loop", action="append", choices=LOOPS,
                        help="event loop(s) to run the servers on (default: both)")
    parser.add_argument("--servers", default=",".join(DEFAULT_SERVERS),
                        help="comma-separated servers (default: all but "
                             + ", ".join(LOG_SERVERS) + "): " + ", ".join(SERVERS))
    parser.add_argument("--duration", type=float, help="seconds per wrk run (default 5)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--pipeline", default="1,16", help="pipelining depths (default 1,16)")
    parser.add_argument("--memory-connections", type=int)
    parser.add_argument("--no-memory", action="store_true", help="skip the idle-memory benchmark")
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument("--no-micro", action="store_true", help="skip the micro targets")
    parser.add_argument("--quick", action="store_true",
                        help="asyncio only, 1 round of 2 s, 1000 idle connections")
    parser.add_argument("--python-load", action="store_true",
                        help="use the Python load generator even if wrk is available")
    parser.add_argument("--output", default=RESULTS, help="results folder")
    parser.add_argument("--no-http2", action="store_true", help="skip the HTTP/2 (h2load) part")
    parser.add_argument("--http2-only", action="store_true", help="only the HTTP/2 part")
    docs = parser.add_mutually_exclusive_group()
    docs.add_argument("--docs", action="store_true", default=None,
                      help="also write the tables and chart into docs/benchmarks.md (the "
                           "default for a full run: every server, not --quick)")
    docs.add_argument("--no-docs", dest="docs", action="store_false",
                      help="leave docs/benchmarks.md alone, even after a full run")
    args = parser.parse_args(argv)

    if args.serve:  # the servers' own entry point is servers.py; kept for old command lines
        serve(args.serve, (args.loop or ["asyncio"])[0])
        return 0

    loops = args.loop or (["asyncio"] if args.quick else list(LOOPS))
    # --quick changes the defaults; explicit options still win.
    if args.duration is None:
        args.duration = 2.0 if args.quick else 5.0
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.memory_connections is None:
        args.memory_connections = 1000 if args.quick else 3000
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    for kind in servers:
        if kind not in SERVERS:
            parser.error(f"unknown server {kind!r}")
    depths = [int(d) for d in args.pipeline.split(",")]

    os.makedirs(args.output, exist_ok=True)
    started = time.time()
    command = "python bench/load.py " + " ".join(sys.argv[1:] if argv is None else argv)
    full_run = not args.quick and not args.memory_only and servers == list(SERVERS)
    write_docs = args.docs or (args.docs is None and full_run)
    if not args.no_http2 and not args.memory_only:
        http2_load.run(args, command.strip(), docs=write_docs)
    if args.http2_only:
        return 0
    wrk = None if args.python_load else ensure_wrk()
    if wrk is None:
        log("load generator: Python fallback (wrk unavailable)")

    rounds: dict = {}
    correctness: dict = {}
    memory: dict = {}
    micro: dict = {}
    if not args.memory_only:
        with LoadGenerator(wrk, args.connections) as generator:
            rounds, correctness = run_rounds(generator, loops, servers, depths, args.rounds,
                                             args.duration, args.output)
    if not args.no_memory:
        kinds = [k for k in MEMORY_SERVERS if k in servers or args.memory_only]
        for loop_name in loops:
            memory[loop_name] = measure_idle_memory(loop_name, kinds, args.memory_connections,
                                                    args.output)
    if not args.no_micro and not args.memory_only:
        micro = micro_ratios(0.2 if args.quick else 1.0)

    rows = summarize(rounds, correctness)
    info = (f"{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
            f"{args.connections} connections, {args.rounds} × {args.duration:g} s rounds, "
            f"load: {'wrk' if wrk else 'Python'}")
    text = write_results(args.output, command.strip(), info, rows, memory, micro, correctness)
    print(text)
    if write_docs:
        update_docs(text, os.path.join(args.output, "load.png"))
        log(f"tables and chart written into {DOCS}")
    log(f"results in {args.output} ({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
