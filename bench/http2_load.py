"""
The HTTP/2 part of the load benchmark, over TLS, loaded with h2load (nghttp2-client):

    python bench/load.py --http2-only [--rounds 3 --duration 5]

``fast-c-tls`` (kyoukai_fast compiled, minimal app) answers HTTP/2 (64 streams: 4 connections
of 16) and, on the same server, HTTP/1.1 over TLS (``h2load --h1``, 64 connections);
``fast-py-tls`` the same with the pure-Python twin; ``hypercorn`` (HTTP/2, the minimal ASGI app)
is the peer. Rounds are interleaved; the server CPU per request comes from ``/proc``. Results:
``bench/results/http2.{md,json,png}``; the goals are ``targets.HTTP2_TARGETS``.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import tempfile

from processes import Server, ensure_tool, log
from report import update_docs
from servers import HTTP2_SERVERS
from targets import HTTP2_TARGETS

__all__ = ("ensure_h2load", "run_h2load", "http2_section", "run")


def median(values):
    return statistics.median(values) if values else float("nan")


def ensure_h2load() -> str | None:
    return ensure_tool("h2load", "nghttp2-client")


def run_h2load(h2load: str, port: int, duration: float, http1: bool) -> dict:
    """h2load over TLS for ``duration`` seconds: 64 streams (4 connections of 16) on HTTP/2,
    64 connections on HTTP/1.1."""
    shape = ["--h1", "-c", "64", "-m", "1"] if http1 else ["-c", "4", "-m", "16"]
    command = [h2load, *shape, "-D", str(max(1, round(duration))), "--warm-up-time", "1",
               "-t", "1", f"https://127.0.0.1:{port}/"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    out = result.stdout
    done = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                     r"(\d+) failed, (\d+) errored", out)
    rps = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    protocol = re.search(r"Application protocol: (\S+)", out)
    if result.returncode != 0 or not done or not rps:
        raise RuntimeError(f"h2load failed: {out}\n{result.stderr}")
    return {"requests": int(done.group(3)), "succeeded": int(done.group(4)),
            "failed": int(done.group(5)) + int(done.group(6)), "rps": float(rps.group(1)),
            "protocol": protocol.group(1) if protocol else "?"}


def http2_section(args, h2load: str, output: str) -> tuple:
    """The HTTP/2 rows: ``(markdown lines, json)``; all servers up at once, rounds interleaved."""
    runs = [("fast-c-tls", False), ("fast-c-tls", True), ("fast-py-tls", False),
            ("fast-py-tls", True), ("hypercorn", False)]
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", cert],
                       check=True, capture_output=True, timeout=60)
        os.environ["KYOUKAI_FAST_BENCH_CERT"], os.environ["KYOUKAI_FAST_BENCH_KEY"] = cert, key
        log("starting HTTP/2 servers (TLS)")
        running = {kind: Server(kind, "asyncio", output) for kind in HTTP2_SERVERS}
        results: dict = {}
        try:
            for kind, http1 in runs:  # warm-up
                run_h2load(h2load, running[kind].port, 1.0, http1)
            for round_index in range(args.rounds):
                for kind, http1 in runs:
                    server = running[kind]
                    before = server.cpu_seconds()
                    result = run_h2load(h2load, server.port, args.duration, http1)
                    result["cpu_us"] = ((server.cpu_seconds() - before)
                                        / max(1, result["requests"]) * 1e6)
                    results.setdefault((kind, http1), []).append(result)
                    log(f"[h2 round {round_index + 1}] {kind:12} {result['protocol']:9} "
                        f"{result['rps']:9,.0f} req/s  server CPU {result['cpu_us']:6.1f} "
                        f"µs/request  failed {result['failed']}")
        finally:
            for server in running.values():
                server.stop()
    rows = []
    for (kind, http1), found in results.items():
        rows.append({"server": kind, "protocol": "http/1.1" if http1 else "h2",
                     "rps": median([r["rps"] for r in found]),
                     "cpu_us": median([r["cpu_us"] for r in found]),
                     "requests": sum(r["requests"] for r in found),
                     "succeeded": sum(r["succeeded"] for r in found),
                     "failed": sum(r["failed"] for r in found)})
    by = {(r["server"], r["protocol"]): r for r in rows}
    md = ["| server (TLS, asyncio) | protocol | HTTP/2 engine | load | req/s | "
          "server CPU µs/req | succeeded / requests |", "|---|---|---|---|---:|---:|---:|"]
    engines = http2_engines()
    for r in rows:
        shape = "64 connections" if r["protocol"] == "http/1.1" else "4 × 16 streams"
        engine = engines.get(r["server"], "") if r["protocol"] == "h2" else ""
        r["engine"] = engine
        md.append(f"| {r['server']} | {r['protocol']} | {engine} | {shape} | {r['rps']:,.0f} | "
                  f"{r['cpu_us']:.1f} | {r['succeeded']:,} / {r['requests']:,} |")
    targets = []
    max_cpu_ratio, min_hypercorn_ratio = (HTTP2_TARGETS["cpu_vs_http11_tls"],
                                          HTTP2_TARGETS["throughput_vs_hypercorn"])
    for impl in ("fast-c-tls", "fast-py-tls"):
        h2_row, h1_row = by.get((impl, "h2")), by.get((impl, "http/1.1"))
        if h2_row and h1_row:
            ratio = h2_row["cpu_us"] / h1_row["cpu_us"]
            targets.append((f"{impl}: HTTP/2 CPU per request / HTTP/1.1-over-TLS's", ratio,
                            f"≤ {max_cpu_ratio}", ratio <= max_cpu_ratio))
        hyper = by.get(("hypercorn", "h2"))
        if h2_row and hyper:
            ratio = h2_row["rps"] / hyper["rps"]
            targets.append((f"{impl}: HTTP/2 req/s / hypercorn's", ratio,
                            f"≥ {min_hypercorn_ratio}", ratio >= min_hypercorn_ratio))
            ratio = hyper["cpu_us"] / h2_row["cpu_us"]
            targets.append((f"{impl}: hypercorn's CPU per request / HTTP/2's", ratio,
                            f"(≥ {min_hypercorn_ratio})", ratio >= min_hypercorn_ratio))
    md += ["", "| HTTP/2 target | measured | target | met |", "|---|---:|---|---|"]
    md += [f"| {d} | {m:.2f}× | {t} | {'yes' if ok else 'NO'} |" for d, m, t, ok in targets]
    write_http2_chart(rows, os.path.join(output, "http2.png"))
    return md, {"rows": rows, "targets": [{"target": d, "measured": m, "goal": t, "met": ok}
                                          for d, m, t, ok in targets]}


def http2_engines() -> dict:
    """The HTTP/2 engine each server runs on: the compiled twin's is libnghttp2's when it was
    built (its servers select it as this process would)."""
    try:
        import kyoukai_fast._http2_nghttp2  # noqa: F401
        compiled = "nghttp2"
    except ImportError:
        compiled = "h2"
    return {"fast-c-tls": compiled, "fast-py-tls": "h2", "hypercorn": "h2 (hypercorn's)"}


def write_http2_chart(rows: list, path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels = [f"{r['server']}\n{r['protocol']}" for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.bar(labels, [r["rps"] for r in rows], color="#4c72b0")
    left.set_title("requests/s (TLS, h2load, 64 streams or connections)")
    right.bar(labels, [r["cpu_us"] for r in rows], color="#dd8452")
    right.set_title("server CPU µs per request (lower is better)")
    for axis in (left, right):
        axis.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def run(args, command: str, docs: bool = False) -> None:
    """Run the HTTP/2 part for ``bench/load.py`` and write ``http2.{md,json,png}``; with
    ``docs``, also its part of ``docs/benchmarks.md``."""
    h2load = ensure_h2load()
    if h2load is None:
        log("HTTP/2 part skipped: h2load unavailable (scripts/install-clients.sh)")
        return
    lines, found = http2_section(args, h2load, args.output)
    head = (f"Command: `{command}` ({platform.node()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}, "
            f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
            f"{args.rounds} × {args.duration:g} s rounds, h2load)")
    text = "\n".join([head, ""] + lines)
    print(text)
    with open(os.path.join(args.output, "http2.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(args.output, "http2.json"), "w") as f:
        json.dump({"command": command, **found}, f, indent=2)
    if docs:
        update_docs(text, os.path.join(args.output, "http2.png"), part="http2")
        log("HTTP/2 tables and chart written into docs/benchmarks.md")
