"""
Load generation: wrk with a Lua script that reports its result as JSON (:data:`LUA_LOAD`), the
same with every response checked (:data:`LUA_CHECK`), and a bounded Python load generator for
machines without wrk.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import tempfile
import time

from servers import BODY

LUA_LOAD = r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  local depth = tonumber(args[1]) or 1
  local r = {}
  for i = 1, depth do r[i] = wrk.format(nil, "/") end
  req = table.concat(r)
end
function request() return req end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKRESULT {"requests": %d, "duration_us": %d, "p50_us": %.1f, ' ..
    '"p99_us": %.1f, "max_us": %.1f, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "status_errors": %d, "timeouts": %d, "ok": -1, "bad": -1}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""

# The correctness pass: the same requests, and every response checked (status and body).
LUA_CHECK = LUA_LOAD.replace('"ok": -1, "bad": -1}\\n\',', '"ok": %d, "bad": %d}\\n\',').replace(
    "e.status, e.timeout))", "e.status, e.timeout, ok, bad))").replace(
    "function done(summary, latency, requests)", r"""
function response(status, headers, body)
  if status == 200 and body == "Hello, world!" then ok = ok + 1 else bad = bad + 1 end
end
function done(summary, latency, requests)
  local ok, bad = 0, 0
  for _, t in ipairs(threads) do ok = ok + t:get("ok"); bad = bad + t:get("bad") end""").replace(
    "  req = table.concat(r)\n", "  req = table.concat(r)\n  ok = 0\n  bad = 0\n")


def run_wrk(wrk: str, script: str, port: int, connections: int, duration: float,
            depth: int) -> dict:
    command = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout",
               "2s", "-s", script, f"http://127.0.0.1:{port}/", "--", str(depth)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    match = re.search(r"WRKRESULT (\{.*\})", result.stdout)
    if not match:
        raise RuntimeError(f"wrk failed: {result.stdout}\n{result.stderr}")
    data = json.loads(match.group(1))
    data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
    return data


def python_load(port: int, connections: int, duration: float, depth: int) -> dict:
    """Fallback load generator (only when wrk cannot be had): asyncio clients, bounded in time."""
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * depth
    latencies: list = []
    counts = {"ok": 0, "bad": 0}

    async def client(deadline):
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        try:
            while time.monotonic() < deadline:
                start = time.perf_counter()
                writer.write(request)
                for _ in range(depth):
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                    body = await asyncio.wait_for(reader.readexactly(length), 5)
                    good = head.startswith(b"HTTP/1.1 200 ") and body == BODY
                    counts["ok" if good else "bad"] += 1
                latencies.append(time.perf_counter() - start)
        finally:
            writer.close()

    async def main():
        deadline = time.monotonic() + duration
        await asyncio.gather(*(client(deadline) for _ in range(connections)))

    start = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - start
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)] if latencies else 0.0
    total = counts["ok"] + counts["bad"]
    return {"requests": total, "duration_us": elapsed * 1e6, "rps": total / elapsed,
            "p50_us": latencies[len(latencies) // 2] * 1e6 if latencies else 0.0,
            "p99_us": p99 * 1e6, "ok": counts["ok"], "bad": counts["bad"], "status_errors": 0,
            "connect_errors": 0, "read_errors": 0, "write_errors": 0, "timeouts": 0}


class LoadGenerator:
    """Runs load against a port with wrk (``wrk`` is its path) or, if ``None``, the Python
    generator; the Lua scripts live in a temporary folder until :meth:`close`."""

    def __init__(self, wrk: str | None, connections: int):
        self.wrk = wrk
        self.connections = connections
        self._folder = tempfile.TemporaryDirectory()
        self._scripts = {}
        for name, text in (("load", LUA_LOAD), ("check", LUA_CHECK)):
            path = self._scripts[name] = os.path.join(self._folder.name, f"{name}.lua")
            with open(path, "w") as f:
                f.write(text)

    def run(self, port: int, depth: int, duration: float, check: bool = False) -> dict:
        if self.wrk is None:
            return python_load(port, self.connections, duration, depth)
        return run_wrk(self.wrk, self._scripts["check" if check else "load"], port,
                       self.connections, duration, depth)

    def close(self) -> None:
        self._folder.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
