#!/usr/bin/env python
"""
Instructions per request under callgrind: the steady measure on a shared, noisy machine.

    python bench/instructions.py                 # minimal app and Kyoukai app, every backend
    python bench/instructions.py --micro         # also environ construction and formatting
    python bench/instructions.py --pipeline      # only the Kyoukai apps: fast vs stock pipeline
    python bench/instructions.py --access-log    # the access log and proxy headers on vs off

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
    parser.add_argument("--pipeline", action="store_true",
                        help="only the Kyoukai apps, each backend with the fast and the stock "
                             "request pipeline")
    parser.add_argument("--access-log", action="store_true",
                        help="the per-request settings' cost: the access log on (to a file, its "
                             "writer thread counted) and proxy headers off, against the defaults")
    parser.add_argument("--apps", default="minimal,kyoukai",
                        help="with --access-log: the apps (default minimal,kyoukai)")
    parser.add_argument("--output", default=os.path.join(HERE, "results"))
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is needed (apt-get install valgrind)")
    results: dict = {}
    impls = ("cython", "python", "stock")
    if args.pipeline:
        pipeline_table(args)
        return
    if args.access_log:
        access_log_table(args)
        return
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


#: ``--access-log``: the settings compared, as bench/inprocess.py options.
SETTING_CASES = (("defaults", []), ("access log on", ["--access-log"]),
                 ("proxy headers off", ["--set", "proxy_headers=false"]))


def access_log_table(args) -> None:
    """Instructions per request with default settings, with the access log on and with proxy
    headers off (no per-request hook at all), each implementation and app."""
    results: dict = {}
    for app in args.apps.split(","):
        for impl in ("cython", "python"):
            for case, options in SETTING_CASES:
                def command(n, impl=impl, app=app, options=options):
                    return [sys.executable, os.path.join(HERE, "inprocess.py"), "--no-check",
                            "--impl", impl, "--app", app, *options, "--requests", str(n)]
                value = per_call(command, args.requests)
                results.setdefault(f"{app} app, {impl}", {})[case] = value
                print(f"{app:8} {impl:7} {case:18} {value:10,.0f} instructions/request",
                      file=sys.stderr)
    names = [case for case, _ in SETTING_CASES]
    lines = ["| instructions per request (callgrind) | " + " | ".join(names)
             + " | access log costs |", "|---|" + "---:|" * (len(names) + 1)]
    for row, by_case in results.items():
        cost = by_case["access log on"] - by_case["defaults"]
        lines.append(f"| {row} | " + " | ".join(f"{by_case[n]:,.0f}" for n in names)
                     + f" | +{cost:,.0f} ({cost / by_case['defaults']:+.1%}) |")
    text = "\n".join(lines)
    print(text)
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "instructions-access-log.md"), "w") as f:
        f.write(f"Command: `python bench/instructions.py --access-log --apps {args.apps}`\n\n"
                + text + "\n")


def pipeline_table(args) -> None:
    """Instructions per request of the Kyoukai apps: kyoukai_fast's pipeline against the app's
    own ``process_request``, on both twins, and stock Kyoukai (its backend and pipeline)."""
    cases = [("cython", "fast"), ("cython", "stock"), ("python", "fast"), ("python", "stock"),
             ("stock", "stock")]
    results: dict = {}
    for app in ("kyoukai", "realistic"):
        for impl, pipeline in cases:
            def command(n, impl=impl, app=app, pipeline=pipeline):
                return [sys.executable, os.path.join(HERE, "inprocess.py"), "--no-check",
                        "--impl", impl, "--app", app, "--pipeline", pipeline,
                        "--requests", str(n)]
            value = per_call(command, args.requests)
            results.setdefault(app, {})[f"{impl}/{pipeline}"] = value
            print(f"{app:9} {impl:7} {pipeline:5} {value:10,.0f} instructions/request",
                  file=sys.stderr)
    lines = ["| instructions per request (callgrind) | compiled, fast pipeline "
             "| compiled, stock pipeline | pure-Python, fast pipeline "
             "| pure-Python, stock pipeline | stock Kyoukai | stock ÷ compiled fast "
             "| stock ÷ pure-Python fast |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for app, row in results.items():
        stock = row["stock/stock"]
        lines.append(f"| {app} app | {row['cython/fast']:,.0f} | {row['cython/stock']:,.0f} "
                     f"| {row['python/fast']:,.0f} | {row['python/stock']:,.0f} | {stock:,.0f} "
                     f"| {stock / row['cython/fast']:.2f}× | {stock / row['python/fast']:.2f}× |")
    text = "\n".join(lines)
    print(text)
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "instructions-pipeline.md"), "w") as f:
        f.write("Command: `python bench/instructions.py --pipeline`\n\n" + text + "\n")
    with open(os.path.join(args.output, "instructions-pipeline.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
