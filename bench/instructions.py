#!/usr/bin/env python
"""
Instructions per request under callgrind: the steady measure on a shared, noisy machine.

    python bench/instructions.py                 # minimal app and Kyoukai app, every backend
    python bench/instructions.py --micro         # also environ construction and formatting

Each case runs ``bench/inprocess.py`` (requests through the protocol against an in-memory
transport) under ``valgrind --tool=callgrind`` twice, with N and 5N requests; the difference of
the two totals divided by 4N is the cost of one request, start-up excluded. Results:
``bench/results/instructions.{md,json}``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

MICRO = r"""
import sys
sys.path.insert(0, {here!r})
import _support
from werkzeug.wrappers import Response
impl, case, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
wsgi = _support.IMPLEMENTATIONS[impl][1]
environ = _support.IMPLEMENTATIONS["python"][1].to_wsgi_environment(
    _support.REQUEST_HEADERS, "GET", _support.REQUEST_TARGET, "1.1")
response = Response("Hello, world!")
headers, target = _support.REQUEST_HEADERS, _support.REQUEST_TARGET
build, render = wsgi.to_wsgi_environment, wsgi.get_formatted_response
if case == "environ":
    for _ in range(n):
        build(headers, "GET", target, "1.1", None)
else:
    for _ in range(n):
        render(response, environ)
"""


def instructions(command: list) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.path.join(ROOT, "src") + os.pathsep + env.get("PYTHONPATH", "")
        result = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + command,
            capture_output=True, text=True, env=env, timeout=1800)
        match = re.search(r"Collected : (\d+)", result.stderr) or re.search(
            r"refs:\s+([\d,]+)", result.stderr)
        if result.returncode != 0 or not match:
            raise RuntimeError(f"callgrind failed: {result.stderr[-2000:]}")
        return int(match.group(1).replace(",", ""))


def per_call(command_of, n: int) -> float:
    small = instructions(command_of(n))
    large = instructions(command_of(5 * n))
    return (large - small) / (4 * n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="N (default 500)")
    parser.add_argument("--micro", action="store_true")
    parser.add_argument("--output", default=os.path.join(HERE, "results"))
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is needed (apt-get install valgrind)")
    results: dict = {}
    impls = ("cython", "python", "stock")
    for app in ("minimal", "kyoukai"):
        for impl in impls:
            command = [sys.executable, os.path.join(HERE, "inprocess.py"), "--no-check",
                       "--impl", impl, "--app", app, "--requests"]
            value = per_call(lambda n, command=command: [*command, str(n)], args.requests)
            results.setdefault(f"request ({app} app)", {})[impl] = value
            print(f"{app:8} {impl:7} {value:10,.0f} instructions/request", file=sys.stderr)
    if args.micro:
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
            f.write(MICRO.format(here=HERE))
            script = f.name
        try:
            for case in ("environ", "format"):
                for impl in impls:
                    command = [sys.executable, script, impl, case]
                    value = per_call(lambda n, command=command: [*command, str(n)],
                                     args.requests * 4)
                    results.setdefault(case, {})[impl] = value
                    print(f"{case:8} {impl:7} {value:10,.0f} instructions/call", file=sys.stderr)
        finally:
            os.unlink(script)
    lines = ["| instructions per call (callgrind) | compiled | pure-Python | stock "
             "| stock ÷ compiled | stock ÷ pure-Python |", "|---|---:|---:|---:|---:|---:|"]
    for case, by_impl in results.items():
        lines.append(f"| {case} | {by_impl['cython']:,.0f} | {by_impl['python']:,.0f} "
                     f"| {by_impl['stock']:,.0f} | {by_impl['stock'] / by_impl['cython']:.2f}× "
                     f"| {by_impl['stock'] / by_impl['python']:.2f}× |")
    text = "\n".join(lines)
    print(text)
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "instructions.md"), "w") as f:
        f.write(f"Command: `python bench/instructions.py{' --micro' if args.micro else ''}`\n\n"
                + text + "\n")
    with open(os.path.join(args.output, "instructions.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
