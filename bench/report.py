"""
The load benchmark's report: rounds summarized into rows (medians, ratios to the floor and to
stock Kyoukai, server CPU per request), checked against :mod:`targets`, and written as a
Markdown table, JSON and a PNG chart.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics

import targets as goals
from processes import log

HERE = os.path.dirname(os.path.abspath(__file__))
#: The benchmark document whose generated part a full run rewrites.
DOCS = os.path.join(os.path.dirname(HERE), "docs", "benchmarks.md")
DOCS_BEGIN = "<!-- written by bench/load.py from here: edit above or below -->"
DOCS_END = "<!-- written by bench/load.py up to here -->"
HTTP2_DOCS_BEGIN = "<!-- HTTP/2: written by bench/load.py from here: edit above or below -->"
HTTP2_DOCS_END = "<!-- HTTP/2: written by bench/load.py up to here -->"
#: Each generated part of the benchmarks document: its markers and the heading it is put under.
DOCS_PARTS = {
    "load": (DOCS_BEGIN, DOCS_END, "Latest run", "requests/s of every server, side by side"),
    "http2": (HTTP2_DOCS_BEGIN, HTTP2_DOCS_END, "Latest HTTP/2 run",
              "HTTP/2 and HTTP/1.1 over TLS: requests/s and server CPU per request"),
}

#: What "x stock" compares each server to (the stock server with the same app).
STOCK_OF = {"stock-kyoukai": "stock-kyoukai", "fast-kyoukai": "stock-kyoukai",
            "fast-py-kyoukai": "stock-kyoukai", "fast-kyoukai-stock-pipeline": "stock-kyoukai",
            "starlette": "stock-kyoukai", "fast-kyoukai-access-log": "stock-kyoukai",
            "fast-kyoukai-route-log": "stock-kyoukai",
            "stock-kyoukai-realistic": "stock-kyoukai-realistic",
            "fast-kyoukai-realistic": "stock-kyoukai-realistic",
            "fast-py-kyoukai-realistic": "stock-kyoukai-realistic"}


def median(values):
    return statistics.median(values) if values else float("nan")


def summarize(rounds: dict, correctness: dict) -> list:
    rows = []
    for (loop_name, depth), by_server in rounds.items():
        medians = {kind: median([r["rps"] for r in runs]) for kind, runs in by_server.items()}
        cpu = {kind: median([r.get("cpu_us", float("nan")) for r in runs])
               for kind, runs in by_server.items()}
        for kind, runs in by_server.items():
            rps = medians[kind]
            stock = medians.get(STOCK_OF.get(kind, "stock-minimal"))
            check = correctness.get((loop_name, depth, kind))
            rows.append({
                "loop": loop_name, "pipeline": depth, "server": kind, "rps": rps,
                "p99_ms": median([r["p99_us"] for r in runs]) / 1000,
                "x_floor": rps / medians["floor"] if medians.get("floor") else None,
                "x_stock": rps / stock if stock else None,
                "cpu_us": cpu[kind],
                "faults_per_request": median([r.get("faults_per_request", float("nan"))
                                              for r in runs]),
                "cpu_x_floor": (cpu["floor"] / cpu[kind]) if "floor" in cpu else None,
                "cpu_x_stock": (cpu[STOCK_OF.get(kind, "stock-minimal")] / cpu[kind]
                                if STOCK_OF.get(kind, "stock-minimal") in cpu else None),
                "errors": sum(r["status_errors"] + r["read_errors"] + r["write_errors"]
                              + r["connect_errors"] + r["timeouts"] for r in runs),
                "rounds": [r["rps"] for r in runs],
                # per round, in round order: servers' rounds pair up (bench/paired_cpu.py)
                "cpu_rounds": [r.get("cpu_us") for r in runs],
                "checked_ok": check["ok"] if check else None,
                "checked_bad": check["bad"] if check else None,
            })
    return rows


def _fmt_ratio(value):
    return "" if value is None else f"{value:.2f}"


def markdown_table(rows: list) -> str:
    lines = ["| loop | pipelining | server | req/s (median) | p99 ms | × floor | × stock "
             "| server CPU µs/req | CPU: × floor | CPU: × stock | page faults/req | correct |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        if row["checked_ok"] is None:
            correct = "not checked"
        elif row["checked_bad"] == 0 and row["checked_ok"] > 0:
            correct = f"yes ({row['checked_ok']:,})"
        else:
            checked = row["checked_ok"] + row["checked_bad"]
            correct = f"NO: {row['checked_bad']:,} bad of {checked:,}"
        # wrk records no latency for pipelined requests.
        p99 = "n/a" if row["pipeline"] > 1 and not row["p99_ms"] else f"{row['p99_ms']:.2f}"
        lines.append(
            f"| {row['loop']} | {'16-deep' if row['pipeline'] > 1 else 'none'} | {row['server']} "
            f"| {row['rps']:,.0f} | {p99} | {_fmt_ratio(row['x_floor'])} "
            f"| {_fmt_ratio(row['x_stock'])} | {row['cpu_us']:.1f} "
            f"| {_fmt_ratio(row['cpu_x_floor'])} | {_fmt_ratio(row['cpu_x_stock'])} "
            f"| {row['faults_per_request']:.2f} | {correct} |")
    return "\n".join(lines)


def asyncio_cpu(rows: list) -> dict:
    """Server CPU µs per request by server, asyncio loop, no pipelining."""
    return {row["server"]: row["cpu_us"] for row in rows
            if row["loop"] == "asyncio" and row["pipeline"] == 1}


def ceilings(rows: list) -> list:
    """Where a request's server CPU goes, and the best ratio any backend could reach.

    ``(description, measured, best, target)`` for the server-CPU targets named in
    ``targets.CEILINGS`` (asyncio, no pipelining). From the same run: the floor's CPU per
    request, the compiled backend's own cost above it (``fast-c-prebuilt``: the app returns a
    prebuilt Response) and the app's own work (the server's CPU minus ``fast-c-prebuilt``'s). A
    backend costing nothing beyond the floor would still spend floor + app per request.
    """
    cpu = asyncio_cpu(rows)

    def have(*kinds):
        return all(cpu.get(k) == cpu.get(k) and cpu.get(k) for k in kinds)  # present, not NaN

    if not have("floor", "fast-c-prebuilt", "fast-c-minimal"):
        return []
    floor, backend = cpu["floor"], cpu["fast-c-prebuilt"]
    out = []
    for description in goals.CEILINGS:
        target = goals.ratio(description)
        if have(target.server, target.other):
            best = floor + max(0.0, cpu[target.server] - backend)
            out.append((description.removeprefix("compiled "),
                        cpu[target.other] / cpu[target.server], cpu[target.other] / best,
                        target.minimum))
    return out


def check_targets(rows: list, memory: dict, micro: dict) -> list:
    """Each target of :mod:`targets` this run measured: ``(description, measured, met)``."""
    def get(kind, depth=1, field="rps"):
        for row in rows:
            if row["loop"] == "asyncio" and row["pipeline"] == depth and row["server"] == kind:
                return row[field]
        return None

    def present(*values):
        return all(v is not None and v == v and v for v in values)  # not None, NaN or 0

    out = []
    for target in goals.RATIOS:
        mine, theirs = get(target.server), get(target.other)
        if mine is not None and theirs is not None and not target.cpu_only:
            value = mine / theirs
            out.append((target.description, f"{value:.2f}× (need ≥ {target.minimum}×)",
                        value >= target.minimum))
    for target in goals.RATIOS:
        mine, theirs = get(target.server, 1, "cpu_us"), get(target.other, 1, "cpu_us")
        if present(mine, theirs):
            value = theirs / mine
            out.append((target.description + " (server CPU per request)",
                        f"{value:.2f}× (need ≥ {target.minimum}×)", value >= target.minimum))
    pipelined, plain = get("fast-c-minimal", 16), get("fast-c-minimal")
    if pipelined is not None and plain is not None:
        value = pipelined / plain
        out.append(("compiled 16-deep pipelined vs its own non-pipelined",
                    f"{value:.2f}× (need ≥ {goals.PIPELINING_GAIN}×)",
                    value >= goals.PIPELINING_GAIN))
    bad = get("fast-c-minimal", 16, "checked_bad")
    if bad is not None:
        out.append(("compiled pipelined: every response correct",
                    f"{bad} bad of {bad + get('fast-c-minimal', 16, 'checked_ok')}", bad == 0))
    p99_fast, p99_stock = get("fast-c-minimal", 1, "p99_ms"), get("stock-minimal", 1, "p99_ms")
    if p99_fast is not None and p99_stock is not None:
        out.append(("p99 latency, compiled vs stock (minimal app)",
                    f"{p99_fast:.2f} ms vs {p99_stock:.2f} ms", p99_fast <= p99_stock))
    for case in ("environ", "format"):
        if case in micro and "cython" in micro[case] and "stock" in micro[case]:
            value = micro[case]["stock"] / micro[case]["cython"]
            out.append((f"micro {case}: compiled vs stock",
                        f"{value:.1f}× ({micro[case]['cython']:.0f} ns vs "
                        f"{micro[case]['stock']:.0f} ns; need ≥ {goals.MICRO_MINIMUM}×)",
                        value >= goals.MICRO_MINIMUM))
    mem = memory.get("asyncio") or {}
    if "fast-c-minimal" in mem and "floor" in mem:
        extra = (mem["fast-c-minimal"]["bytes_per_connection"]
                 - mem["floor"]["bytes_per_connection"])
        out.append(("idle keep-alive connection, compiled above floor",
                    f"{extra:.0f} B (need ≤ {goals.IDLE_BYTES_ABOVE_FLOOR} B)",
                    extra <= goals.IDLE_BYTES_ABOVE_FLOOR))
    return out


def render(command: str, info: str, rows: list, memory: dict, micro: dict, targets: list,
           limits: list) -> str:
    """The Markdown report of one run."""
    md = [f"Command: `{command}` ({info})", ""]
    if rows:
        md += [markdown_table(rows), "",
               "× stock: against stock Kyoukai with the same app (`stock-kyoukai` for the real "
               "Kyoukai app, `stock-minimal` otherwise). correct: a separate 1 s wrk pass that "
               "checks every response's status and body. p99: wrk's latency percentile (none "
               "with pipelining). server CPU µs/req: user+system CPU time of the server process "
               "per request (median of rounds), steadier than req/s on a shared machine where "
               "a server gets only part of a core; CPU ratios compare those costs (higher is "
               "cheaper).", ""]
    if memory:
        md += ["| loop | server | RSS growth per idle keep-alive connection |", "|---|---|---:|"]
        for loop_name, by_kind in memory.items():
            for kind, m in by_kind.items():
                md.append(f"| {loop_name} | {kind} | {m['bytes_per_connection']:,.0f} B "
                          f"({m['connections']:,} connections) |")
        md.append("")
    if micro:
        md += ["| micro (ns per call, best of 5) | compiled | pure-Python | stock |",
               "|---|---:|---:|---:|"]
        for case, by_impl in micro.items():
            md.append(f"| {case} | " + " | ".join(f"{by_impl.get(n, float('nan')):,.0f}"
                                                  for n in ("cython", "python", "stock")) + " |")
        md.append("")
    if targets:
        md += ["| target (asyncio, 64 connections) | measured | met |", "|---|---|---|"]
        md += [f"| {d} | {m} | {'yes' if ok else 'NO'} |" for d, m, ok in targets]
        md.append("")
    if limits:
        cpu = asyncio_cpu(rows)
        md += [f"Where a request's server CPU goes (asyncio, no pipelining): floor "
               f"{cpu['floor']:.1f} µs; kyoukai_fast's own cost above it "
               f"{cpu['fast-c-prebuilt'] - cpu['floor']:.1f} µs (`fast-c-prebuilt`); the "
               f"minimal app's own work {cpu['fast-c-minimal'] - cpu['fast-c-prebuilt']:.1f} µs"
               + (f", the real Kyoukai app's {cpu['fast-kyoukai'] - cpu['fast-c-prebuilt']:.1f} µs"
                  if "fast-kyoukai" in cpu else "")
               + ". A backend costing nothing beyond the floor would still spend floor + app per "
               "request, which caps every backend's ratios:", "",
               "| server CPU ratio (asyncio) | measured | best any backend could reach | target |",
               "|---|---:|---:|---:|"]
        md += [f"| {d} | {m:.2f}× | {best:.2f}× | {t}× |" for d, m, best, t in limits]
        md.append("")
    return "\n".join(md)


def write_results(output: str, command: str, info: str, rows: list, memory: dict, micro: dict,
                  correctness: dict) -> str:
    """Write ``load.md``, ``load.json`` and ``load.png`` into ``output``; the Markdown text."""
    targets = check_targets(rows, memory, micro)
    limits = ceilings(rows)
    text = render(command, info, rows, memory, micro, targets, limits)
    with open(os.path.join(output, "load.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(output, "load.json"), "w") as f:
        json.dump({"command": command, "info": info, "rows": rows, "memory": memory,
                   "micro_ns": micro,
                   "ceilings": [{"ratio": d, "measured": m, "best": b, "target": t}
                                for d, m, b, t in limits],
                   "targets": [{"target": d, "measured": m, "met": ok} for d, m, ok in targets],
                   "correctness": [{"loop": k[0], "pipeline": k[1], "server": k[2], **v}
                                   for k, v in correctness.items()]}, f, indent=2)
    if rows and write_chart(rows, os.path.join(output, "load.png")):
        log(f"chart: {os.path.join(output, 'load.png')}")
    return text


def write_chart(rows: list, path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not installed: no chart")
        return False
    configs = sorted({(r["loop"], r["pipeline"]) for r in rows})
    fig, axes = plt.subplots(len(configs), 1, figsize=(10, 3.2 * len(configs)), squeeze=False)
    for ax, (loop_name, depth) in zip(axes[:, 0], configs, strict=True):
        sub = [r for r in rows if r["loop"] == loop_name and r["pipeline"] == depth]
        names = [r["server"] for r in sub]
        values = [r["rps"] for r in sub]
        colors = ["#888888" if n == "floor" else "#d62728" if n.startswith("stock")
                  else "#1f77b4" if n.startswith("fast") else "#2ca02c" for n in names]
        bars = ax.barh(names, values, color=colors)
        ax.invert_yaxis()
        for bar, value in zip(bars, values, strict=True):
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {value:,.0f}",
                    va="center", fontsize=8)
        ax.set_title(f"{loop_name}, {'16-deep pipelining' if depth > 1 else 'no pipelining'}, "
                     "64 connections", fontsize=10)
        ax.set_xlabel("requests/s (median of rounds)")
        ax.set_xlim(0, max(values) * 1.18 if values else 1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def update_docs(text: str, chart: str | None = None, path: str = DOCS,
                part: str = "load") -> None:
    """Put ``text`` (a run's Markdown report) and ``chart`` (its PNG, copied next to ``path``)
    between the markers of ``path`` for ``part`` (``"load"`` or ``"http2"``); the rest of the
    document stays as written."""
    begin, end, heading, alt = DOCS_PARTS[part]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = ""
    if chart is not None and os.path.exists(chart):
        name = f"{os.path.splitext(os.path.basename(path))[0]}-{part}.png"
        shutil.copyfile(chart, os.path.join(os.path.dirname(path), name))
        image = f"![{alt}]({name})\n\n"
    block = f"{begin}\n\n{image}{text.strip()}\n\n{end}"
    try:
        with open(path, encoding="utf-8") as f:
            document = f.read()
    except FileNotFoundError:
        document = "# Benchmarks\n"
    if begin in document and end in document:
        start = document.index(begin)
        stop = document.index(end) + len(end)
        document = document[:start] + block + document[stop:]
    else:
        document = document.rstrip("\n") + f"\n\n## {heading}\n\n" + block + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(document)
