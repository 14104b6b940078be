#!/usr/bin/env python
"""
Server CPU per request of a log line, in one process (steadier than a load run on a busy
machine): kyoukai_fast's access log (the request hook's start time, the line, and its writer
thread writing to a file), against Kyoukai's own ``log_route`` line through ``logging`` to a
file, as the CLI's ``--log-level info`` wrote it before the access log. CPU time is the
process's (every thread), per request, the best of ``--repeat`` runs.

    python bench/access_log_cost.py [--requests 50000] [--repeat 5]

Instructions per request (callgrind, the writer thread included), N and 5N requests:

    valgrind --tool=callgrind python bench/access_log_cost.py --only access_log --requests N
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "src"))

from kyoukai_fast._config import ProtocolConfig  # noqa: E402
from kyoukai_fast._request_hooks import request_hooks  # noqa: E402

RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: 13\r\nDate: Tue, 01 Dec 2026 22:00:00 GMT\r\n\r\nHello, world!")


def environ() -> dict:
    return {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": "", "RAW_URI": "/",
            "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "50312",
            "HTTP_HOST": "127.0.0.1"}


class _State:
    connections: set = set()


async def access_log_run(n: int, path: str) -> float:
    hooks = request_hooks(ProtocolConfig(access_log=True), _State())
    with open(path, "w") as stream:
        hooks.access_log.stream = stream
        on_request, on_response = hooks.on_request, hooks.on_response
        started = time.process_time()
        for index in range(n):
            env = environ()
            on_request(None, env)
            on_response(env, RESPONSE, False)
            if index % 64 == 63:
                await asyncio.sleep(0)  # let the flush timer run, as a loop serving would
        hooks.access_log.close(timeout=30)
        return (time.process_time() - started) / n


async def route_log_run(n: int, path: str) -> float:
    logger = logging.getLogger("Kyoukai")
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        started = time.process_time()
        for index in range(n):
            env = environ()
            logger.info("{} {} - {}".format(env["REQUEST_METHOD"], env["PATH_INFO"], 200))
            if index % 64 == 63:
                await asyncio.sleep(0)
        return (time.process_time() - started) / n
    finally:
        logger.removeHandler(handler)
        handler.close()


async def baseline_run(n: int, path: str) -> float:
    started = time.process_time()
    for index in range(n):
        environ()
        if index % 64 == 63:
            await asyncio.sleep(0)
    return (time.process_time() - started) / n


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=50000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", choices=("baseline", "access_log", "route_log"),
                        help="run one case once (for callgrind: bench/instructions.py's way)")
    args = parser.parse_args(argv)
    if args.only:
        with tempfile.TemporaryDirectory() as tmp:
            run = {"baseline": baseline_run, "access_log": access_log_run,
                   "route_log": route_log_run}[args.only]
            asyncio.run(run(args.requests, os.path.join(tmp, "log")))
        return 0
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "log")
        for name, run in (("baseline", baseline_run), ("access_log", access_log_run),
                          ("route_log", route_log_run)):
            results[name] = min(asyncio.run(run(args.requests, path))
                                for _ in range(args.repeat)) * 1e6
    base = results["baseline"]
    print(f"access log (kyoukai_fast):      {results['access_log'] - base:6.2f} µs/request")
    print(f"log_route (Kyoukai, logging):   {results['route_log'] - base:6.2f} µs/request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
