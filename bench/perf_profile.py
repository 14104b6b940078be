#!/usr/bin/env python
"""
Where a loaded server's CPU goes: perf samples of one server process under wrk, by shared object.

    python bench/perf_profile.py                        # floor, fast-c-prebuilt, fast-c-minimal
    python bench/perf_profile.py --servers fast-kyoukai,stock-kyoukai --loop uvloop

Each server of ``bench/load.py`` runs as its own subprocess on 127.0.0.1 and is loaded by wrk (64
connections, no pipelining) while ``perf record -e cpu-clock`` samples it. The samples are summed
by the shared object they fall in: the kernel (the loopback TCP stack and the system calls), the
interpreter (``libpython``: the event loop and transports written in Python, every Python object
made or freed, werkzeug and the app), kyoukai_fast's compiled modules, httptools (llhttp and its
callbacks), uvloop, libc. Multiplied by the server CPU time per request measured over the same
wrk run, each share becomes µs per request: what the load benchmark's totals are made of, and
so which part a backend can still shrink. perf comes from Debian's ``linux-perf`` (installed
with apt-get where missing); the software clock event needs no hardware counters. Results:
``bench/results/perf_profile.{md,json}``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from processes import RESULTS, Server, ensure_tool, ensure_wrk, log  # noqa: E402
from servers import LOOPS, SERVERS  # noqa: E402

#: Columns of the table, in order; ``classify`` maps a shared object to one of them.
GROUPS = ("kernel", "interpreter", "kyoukai_fast", "httptools", "uvloop", "libc", "other")
DEFAULT_SERVERS = ("floor", "fast-c-prebuilt", "fast-c-minimal")


def classify(dso: str) -> str:
    """The group of one shared object as ``perf report --sort dso`` names it."""
    name = os.path.basename(dso.strip())
    if name.startswith("[kernel") or name in ("[vdso]", "[vsyscall]"):
        return "kernel"
    if name.startswith(("libpython", "python")):
        return "interpreter"
    if name.startswith(("_protocol_c.", "_wsgi_c.")):
        return "kyoukai_fast"
    if name.startswith(("parser.", "url_parser.")):
        return "httptools"
    if name.startswith("loop.") and "cpython" in name:
        return "uvloop"
    if name.startswith(("libc.", "libc-", "libm.", "ld-linux")):
        return "libc"
    return "other"


_REPORT_LINE = re.compile(r"^\s*([\d.]+)%\s+(\S.*?)\s*$")


def parse_report(text: str) -> dict:
    """``perf report --stdio --sort dso -g none`` output → ``{group: percent}`` (every group)."""
    shares = dict.fromkeys(GROUPS, 0.0)
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = _REPORT_LINE.match(line)
        if match:
            shares[classify(match.group(2))] += float(match.group(1))
    return shares


def split_per_request(shares: dict, cpu_us: float) -> dict:
    """Each group's share of the samples as µs of server CPU per request."""
    total = sum(shares.values()) or 1.0
    return {group: cpu_us * percent / total for group, percent in shares.items()}


def profile(perf: str, wrk: str, kind: str, loop_name: str, duration: float,
            frequency: int, log_dir: str) -> dict:
    """Load one server with wrk while perf samples it; its shares and CPU µs per request."""
    server = Server(kind, loop_name, log_dir)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = os.path.join(tmp, "perf.data")
            cpu_before = server.cpu_seconds()
            # wrk runs a second longer than perf on each side, so every sample is under load.
            loader = subprocess.Popen(
                [wrk, "-t1", "-c64", f"-d{round(duration) + 2}s", "--timeout", "2s",
                 f"http://127.0.0.1:{server.port}/"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                time.sleep(1.0)
                subprocess.run([perf, "record", "-q", "-e", "cpu-clock", "-F", str(frequency),
                                "-p", str(server.proc.pid), "-o", data, "--", "sleep",
                                str(duration)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               timeout=duration + 60, check=True)
                out, _ = loader.communicate(timeout=duration + 60)
            finally:
                if loader.poll() is None:
                    loader.kill()
                    loader.wait()
            cpu_seconds = server.cpu_seconds() - cpu_before
            report = subprocess.run([perf, "report", "-i", data, "--stdio", "--sort", "dso",
                                     "-g", "none"], capture_output=True, text=True,
                                    timeout=300, check=True).stdout
    finally:
        server.stop()
    match = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
    if not match:
        raise RuntimeError(f"wrk failed: {out}")
    requests = int(match.group(1))
    shares = parse_report(report)
    cpu_us = cpu_seconds / requests * 1e6
    return {"server": kind, "loop": loop_name, "requests": requests, "cpu_us": cpu_us,
            "shares": shares, "us_per_request": split_per_request(shares, cpu_us)}


def markdown(rows: list) -> str:
    head = ["loop", "server", "server CPU µs/req", *GROUPS]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for row in rows:
        cells = [row["loop"], row["server"], f"{row['cpu_us']:.1f}"]
        cells += [f"{row['us_per_request'][group]:.2f} ({row['shares'][group]:.0f}%)"
                  for group in GROUPS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default=",".join(DEFAULT_SERVERS),
                        help=f"comma-separated, of: {', '.join(SERVERS)}")
    parser.add_argument("--loop", choices=LOOPS, default="asyncio")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds sampled per server")
    parser.add_argument("--frequency", type=int, default=2000, help="samples per second")
    parser.add_argument("--output", default=RESULTS, help="results folder")
    args = parser.parse_args(argv)
    kinds = [kind for kind in args.servers.split(",") if kind]
    unknown = sorted(set(kinds) - set(SERVERS))
    if unknown:
        parser.error(f"unknown servers: {', '.join(unknown)}")
    perf = ensure_tool("perf", "linux-perf")
    wrk = ensure_wrk()
    if perf is None or wrk is None:
        raise SystemExit("perf and wrk are needed (Debian: apt-get install linux-perf wrk)")
    rows = []
    for kind in kinds:
        log(f"profiling {kind} ({args.loop}, {args.duration:g} s)")
        rows.append(profile(perf, wrk, kind, args.loop, args.duration, args.frequency,
                            args.output))
    command = "python bench/perf_profile.py " + " ".join(sys.argv[1:] if argv is None else argv)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    table = (f"Command: `{command.strip()}` ({stamp}; perf cpu-clock samples of the server "
             f"process under wrk, 64 connections; each cell: µs of server CPU per request "
             f"(share of the samples))\n\n" + markdown(rows))
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "perf_profile.md"), "w") as out:
        out.write(table)
    with open(os.path.join(args.output, "perf_profile.json"), "w") as out:
        json.dump({"command": command, "time": stamp, "rows": rows}, out, indent=2)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
