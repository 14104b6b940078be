#!/usr/bin/env python
"""
Requests through a protocol in-process (in-memory transport, no sockets): the steady workload to
profile and to count instructions of, since wall-clock timings on a shared machine are noisy.

    python bench/inprocess.py --impl cython --app minimal --requests 20000
    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out \\
        python bench/inprocess.py --impl cython --requests 2000
    python bench/inprocess.py --impl cython --profile    # cProfile, top functions

``--app kyoukai`` serves a real Kyoukai hello-world app (its ``process_request``) instead of the
minimal app; ``--app prebuilt`` an app returning one prebuilt Response (the backend alone).
``--set NAME=VALUE`` changes a ProtocolConfig setting (``--set proxy_headers=false``);
``--access-log`` switches the access log on, written to a temporary file by its thread. Each
response is checked. Instructions per request under callgrind: run with two request counts and
divide the difference of the totals by the difference of the counts.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _support import (  # noqa: E402
    HELLO,
    IMPLEMENTATIONS,
    REALISTIC_MIX,
    REQUEST_BYTES,
    HelloApp,
    PrebuiltHelloApp,
    bench_component,
    kyoukai_hello_app,
    kyoukai_realistic_app,
    memory_transport,
    request_bytes,
    split_responses,
)


def run(impl: str, app_kind: str, count: int, check: bool = True,
        pipeline: str = "fast", settings: dict | None = None) -> float:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        app = (kyoukai_hello_app(loop) if app_kind == "kyoukai"
               else kyoukai_realistic_app(loop) if app_kind == "realistic"
               else PrebuiltHelloApp(loop) if app_kind == "prebuilt" else HelloApp(loop))
        parent_context = None
        mix = [(REQUEST_BYTES, 200)]
        if app_kind == "realistic":
            mix = [(request_bytes(target), status) for target, status in REALISTIC_MIX]
        if app_kind in ("kyoukai", "realistic"):
            from asphalt.core import Context

            parent_context = Context()
        component = bench_component(app, fast_pipeline=pipeline == "fast", **(settings or {}))
        protocol = IMPLEMENTATIONS[impl][0].KyoukaiProtocol(component, parent_context,
                                                            "127.0.0.1", 8080)
        transport = memory_transport()
        protocol.connection_made(transport)
        data_received = protocol.data_received

        stock = impl == "stock"

        async def requests(n):
            for i in range(n):
                data_received(mix[i % len(mix)][0])
                if stock:
                    # The loop turn that runs the stock backend's request task (kyoukai_fast
                    # answers a handler that does not suspend inside data_received).
                    await asyncio.sleep(0)

        start = time.perf_counter()
        done = 0
        while done < count:
            batch = min(256, count - done)
            loop.run_until_complete(requests(batch))
            data = transport.take()
            if check:
                responses = split_responses(data)
                assert len(responses) == batch, (len(responses), batch)
                if app_kind == "realistic":
                    assert [int(s.split()[1]) for s, _, _ in responses] == [
                        mix[i % len(mix)][1] for i in range(batch)], responses[:4]
                else:
                    assert all(s.endswith(" 200 OK") and b == HELLO for s, _, b in responses)
            done += batch
        elapsed = time.perf_counter() - start
        if settings and settings.get("access_log"):
            from kyoukai_fast._config import existing_server_state

            existing_server_state(component).hooks.access_log.close(timeout=60)  # all written
        return elapsed
    finally:
        loop.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", choices=("cython", "python", "stock"), default="cython")
    parser.add_argument("--app", choices=("minimal", "prebuilt", "kyoukai", "realistic"),
                        default="minimal")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--pipeline", choices=("fast", "stock"), default="fast",
                        help="kyoukai_fast's request pipeline, or the app's own process_request")
    parser.add_argument("--profile", action="store_true", help="cProfile, top 25 by own time")
    parser.add_argument("--no-check", action="store_true",
                        help="do not parse and check the responses (for instruction counts)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a ProtocolConfig setting (repeatable)")
    parser.add_argument("--access-log", action="store_true",
                        help="the access log on, to a temporary file")
    args = parser.parse_args()
    settings = dict(item.split("=", 1) for item in args.set)
    with tempfile.TemporaryDirectory(prefix="kyoukai-fast-bench-") as folder:
        if args.access_log:
            settings.update(access_log=True, access_log_file=os.path.join(folder, "access.log"))
        _main(args, settings)


def _main(args, settings) -> None:
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.runcall(run, args.impl, args.app, args.requests, False, args.pipeline,
                         settings)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return
    elapsed = run(args.impl, args.app, args.requests, not args.no_check, args.pipeline, settings)
    print(f"{args.impl} {args.app} ({args.pipeline} pipeline): {args.requests} requests, "
          f"{elapsed / args.requests * 1e6:.2f} µs/request")


if __name__ == "__main__":
    main()
