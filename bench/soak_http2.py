#!/usr/bin/env python
"""
HTTP/2 memory soak: many requests on ONE connection, the server's RSS flat.

    .venv/bin/python bench/soak_http2.py                     # 100,000 requests, compiled twin
    .venv/bin/python bench/soak_http2.py --requests 20000 --impl python

A server subprocess on an ephemeral 127.0.0.1 port (the HTTP/1.1 protocol, which hands the
connection over on the HTTP/2 preface) answers with a minimal app and reports its RSS after the
first ``--requests // 10`` requests and after all of them. h2load sends them on one connection
(``-c 1``, 10 concurrent streams), cycling through a small and a 64 KiB response. Exits non-zero
when a request failed or when RSS grew more than ``--rss-limit-mib`` between the two samples.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run_server(total: int, impl: str) -> None:
    sys.path.insert(0, os.path.join(ROOT, "src"))
    from werkzeug.wrappers import Request, Response

    import kyoukai_fast.compat

    kyoukai_fast.compat.apply()
    module = __import__(f"kyoukai_fast._protocol_{'c' if impl == 'cython' else 'py'}",
                        fromlist=["KyoukaiProtocol"])
    big = b"x" * 65536
    checkpoints = {total // 10: "first", total: "last"}
    state = {"count": 0}

    class Signal:
        def dispatch(self, **kwargs):
            pass

    class App:
        request_class = Request

        async def process_request(self, request, parent_context):
            state["count"] += 1
            which = checkpoints.get(state["count"])
            if which is not None:
                # measured once the response before it is gone: on the next loop iteration
                asyncio.get_running_loop().call_soon(
                    lambda: print(json.dumps({which: rss_kib(), "count": state["count"]}),
                                  flush=True))
            return Response(big if request.path == "/big" else b"Hello, world!")

    class Component:
        def __init__(self):
            self.app = App()
            self.cfg = {"keepalive_timeout": 600.0}
            self.connection_made = Signal()
            self.connection_lost = Signal()

        def get_server_name(self):
            return "127.0.0.1"

    async def main():
        loop = asyncio.get_running_loop()
        component = Component()
        server = await loop.create_server(
            lambda: module.KyoukaiProtocol(component, None, "127.0.0.1", 0), "127.0.0.1", 0)
        from kyoukai_fast._http2 import HTTP2Protocol

        print(json.dumps({"port": server.sockets[0].getsockname()[1],
                          "engine": HTTP2Protocol.engine_class.name}), flush=True)
        await server.serve_forever()

    asyncio.run(main())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--impl", choices=("cython", "python"), default="cython")
    parser.add_argument("--rss-limit-mib", type=float, default=4.0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        run_server(args.requests, args.impl)
        return 0
    h2load = shutil.which("h2load")
    if h2load is None:
        print("h2load is missing: bash scripts/install-clients.sh", file=sys.stderr)
        return 2
    env = dict(os.environ)
    if args.impl == "python":
        env["KYOUKAI_FAST_NO_EXTENSIONS"] = "1"
    server = subprocess.Popen([sys.executable, __file__, "--serve", "--requests",
                               str(args.requests), "--impl", args.impl],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        hello = json.loads(server.stdout.readline())
        port, engine = hello["port"], hello["engine"]
        started = time.monotonic()
        result = subprocess.run([h2load, "-n", str(args.requests), "-c", "1", "-m", "10",
                                 f"http://127.0.0.1:{port}/", f"http://127.0.0.1:{port}/big"],
                                capture_output=True, text=True, timeout=3600)
        elapsed = time.monotonic() - started
        samples = {}
        while "last" not in samples:
            line = server.stdout.readline()
            if not line:
                break
            samples.update(json.loads(line))
    finally:
        server.terminate()
        server.wait(timeout=10)
    done = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded",
                     result.stdout)
    if not done or "first" not in samples or "last" not in samples:
        print(result.stdout, result.stderr, samples, file=sys.stderr)
        return 1
    succeeded = int(done.group(3))
    growth = (samples["last"] - samples["first"]) / 1024
    print(f"{args.impl} ({engine} engine): {succeeded:,} of {args.requests:,} requests "
          f"succeeded on one connection in {elapsed:.0f} s; server RSS "
          f"{samples['first'] / 1024:.1f} MiB after "
          f"{args.requests // 10:,}, {samples['last'] / 1024:.1f} MiB after {args.requests:,} "
          f"(growth {growth:+.2f} MiB, limit {args.rss_limit_mib} MiB)")
    return 0 if succeeded == args.requests and growth <= args.rss_limit_mib else 1


if __name__ == "__main__":
    sys.exit(main())
