#!/usr/bin/env python
"""
Bytes per idle keep-alive connection, in process: the steady counterpart of
``load.py --memory-only`` (whose RSS growth swings by a hundred bytes between runs).

Each connection is a protocol object on an in-memory transport that has answered one request;
tracemalloc counts what the protocols allocated (the transports are made beforehand and not
counted), after a garbage collection, divided by the number of connections.

    python bench/idle_memory.py                 # floor, cython, python, stock; 2000 connections
    python bench/idle_memory.py --top 8         # and where the bytes were allocated
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _support import IMPLEMENTATIONS, HelloApp, bench_component, memory_transport  # noqa: E402
from servers import floor_protocol  # noqa: E402

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def measure(kind: str, count: int, top: int = 0) -> float:
    """Bytes allocated per idle connection of ``kind`` (``floor`` or an implementation name)."""

    async def main() -> float:
        if kind == "floor":
            factory = floor_protocol()
        else:
            protocol_class = IMPLEMENTATIONS[kind][0].KyoukaiProtocol
            component = bench_component(HelloApp(asyncio.get_running_loop()))

            def factory():
                return protocol_class(component, None, "127.0.0.1", 8080)

        async def connect(transport):
            protocol = factory()
            protocol.connection_made(transport)
            protocol.data_received(REQUEST)
            for _ in range(10):  # stock Kyoukai answers in a task
                if transport.written:
                    break
                await asyncio.sleep(0)
            assert transport.written.startswith(b"HTTP/1.1 200"), bytes(transport.written[:80])
            transport.written.clear()
            return protocol

        # Warm up: the first connections' one-time costs (caches, the server state).
        warm = [await connect(memory_transport()) for _ in range(50)]
        transports = []
        for number in range(count):
            transport = memory_transport()
            transport._extra["peername"] = ("127.0.0.1", 40000 + number % 20000)
            transports.append(transport)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            protocols = [await connect(transport) for transport in transports]
            for _ in range(3):  # what the requests left scheduled (a finished task's step) runs
                await asyncio.sleep(0)
            gc.collect()
            after = tracemalloc.get_traced_memory()[0]
            snapshot = tracemalloc.take_snapshot() if top else None
        finally:
            tracemalloc.stop()
        assert len(protocols) == count and len(warm) == 50  # all alive until measured
        if snapshot is not None:
            for stat in snapshot.statistics("lineno")[:top]:
                print(f"    {stat.size / count:8.1f} B/connection  {stat}")
        return (after - before) / count

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--top", type=int, default=0, help="show the N largest allocation sites")
    parser.add_argument("kinds", nargs="*", default=["floor", "cython", "python", "stock"])
    args = parser.parse_args()
    results = {}
    for kind in args.kinds:
        if kind != "floor" and IMPLEMENTATIONS.get(kind) is None:
            print(f"{kind:8} not available")
            continue
        results[kind] = measure(kind, args.connections, args.top)
        above = (f"  ({results[kind] - results['floor']:+.0f} B vs floor)"
                 if "floor" in results and kind != "floor" else "")
        print(f"{kind:8} {results[kind]:8.1f} B per idle keep-alive connection{above}")


if __name__ == "__main__":
    main()
