"""
Load generation: wrk with a Lua script that reports its result as JSON (:data:`LUA_LOAD`), the
same with every response checked (:data:`LUA_CHECK`), a script cycling through a mix of
requests with each answer checked (:func:`mix_script`), and a bounded Python load generator for
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


def _lua_string(data: bytes) -> str:
    return '"' + "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\{b:03d}"
                         for b in data) + '"'


def mix_script(answers, exact: bool) -> str:
    """A wrk script cycling through ``answers`` (``(target, status, body)``), each connection's
    requests in turn, and checking every response's status and body.

    ``exact``: the responses must be the answers of the requests in the order they went out
    (each thread's come back in the order its requests did, so this needs one wrk thread per
    connection); otherwise it must be the answer of one of the mix's requests (one thread, as in
    the timed runs). A wrong answer counts as bad and as a status error (wrk's own status
    errors count the mix's expected 404s, so they are not reported).
    """
    targets = ", ".join(_lua_string(t.encode()) for t, _, _ in answers)
    statuses = ", ".join(str(s) for _, s, _ in answers)
    bodies = ", ".join(_lua_string(b) for _, _, b in answers)
    return r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end
local targets = {%(targets)s}
local statuses = {%(statuses)s}
local bodies = {%(bodies)s}
local exact = %(exact)s
function init(args)
  depth = tonumber(args[1]) or 1
  reqs = {}
  for first = 1, #targets do  -- depth requests in a row, the first one being targets[first]
    local r = {}
    for i = 0, depth - 1 do r[i + 1] = wrk.format(nil, targets[(first - 1 + i) %% #targets + 1]) end
    reqs[first] = table.concat(r)
  end
  sent, answered, ok, bad = 0, 0, 0, 0
end
function request()
  local first = sent %% #targets + 1
  sent = sent + depth
  return reqs[first]
end
function response(status, headers, body)
  local good = false
  if exact and phase then
    local i = (phase + answered) %% #targets + 1
    good = status == statuses[i] and body == bodies[i]
  else
    for i = 1, #targets do
      if status == statuses[i] and body == bodies[i] then
        good = true
        -- wrk calls request() once more than it sends (checking the script), so where the
        -- cycle starts is taken from the first right answer; each one then follows in turn
        if exact then phase = i - 1 - answered end
        break
      end
    end
  end
  answered = answered + 1
  if good then ok = ok + 1 else bad = bad + 1 end
end
function done(summary, latency, requests)
  local e = summary.errors
  local ok, bad = 0, 0
  for _, t in ipairs(threads) do ok = ok + t:get("ok"); bad = bad + t:get("bad") end
  io.write(string.format('WRKRESULT {"requests": %%d, "duration_us": %%d, "p50_us": %%.1f, ' ..
    '"p99_us": %%.1f, "max_us": %%.1f, "connect_errors": %%d, "read_errors": %%d, ' ..
    '"write_errors": %%d, "status_errors": %%d, "timeouts": %%d, "ok": %%d, "bad": %%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, bad, e.timeout, ok, bad))
end
""" % {"targets": targets, "statuses": statuses, "bodies": bodies,
       "exact": "true" if exact else "false"}


def run_wrk(wrk: str, script: str, port: int, connections: int, duration: float,
            depth: int, threads: int = 1) -> dict:
    command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
               "--timeout", "2s", "-s", script, f"http://127.0.0.1:{port}/", "--", str(depth)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    match = re.search(r"WRKRESULT (\{.*\})", result.stdout)
    if not match:
        raise RuntimeError(f"wrk failed: {result.stdout}\n{result.stderr}")
    data = json.loads(match.group(1))
    data["rps"] = data["requests"] / (data["duration_us"] / 1e6)
    return data


def python_load(port: int, connections: int, duration: float, depth: int,
                answers=None) -> dict:
    """Fallback load generator (only when wrk cannot be had): asyncio clients, bounded in time.

    Each response is checked: a 200 with :data:`BODY`, or with ``answers`` (``(target, status,
    body)``), each connection cycling through them, the answer of the request it answers.
    """
    answers = answers or (("/", 200, BODY),)
    requests = [b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % target.encode()
                for target, _, _ in answers]
    latencies: list = []
    counts = {"ok": 0, "bad": 0}

    async def client(deadline):
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        sent = 0
        try:
            while time.monotonic() < deadline:
                start = time.perf_counter()
                batch = [(sent + i) % len(answers) for i in range(depth)]
                sent += depth
                writer.write(b"".join(requests[i] for i in batch))
                for i in batch:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                    body = await asyncio.wait_for(reader.readexactly(length), 5)
                    _, status, expected = answers[i]
                    good = head.startswith(b"HTTP/1.1 %d " % status) and body == expected
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
            "p99_us": p99 * 1e6, "ok": counts["ok"], "bad": counts["bad"],
            "status_errors": counts["bad"], "connect_errors": 0, "read_errors": 0,
            "write_errors": 0, "timeouts": 0}


class LoadGenerator:
    """Runs load against a port with wrk (``wrk`` is its path) or, if ``None``, the Python
    generator; the Lua scripts live in a temporary folder until :meth:`close`."""

    def __init__(self, wrk: str | None, connections: int):
        self.wrk = wrk
        self.connections = connections
        self._folder = tempfile.TemporaryDirectory()
        self._scripts = {}
        for name, text in (("load", LUA_LOAD), ("check", LUA_CHECK)):
            self._write(name, text)

    def _write(self, name: str, text: str) -> str:
        path = self._scripts[name] = os.path.join(self._folder.name, f"{name}.lua")
        with open(path, "w") as f:
            f.write(text)
        return path

    def run(self, port: int, depth: int, duration: float, check: bool = False,
            answers=None) -> dict:
        """Load ``port`` for ``duration`` s, ``depth`` requests pipelined per connection.

        Without ``answers``: ``GET /``, responses checked (200, :data:`BODY`) only with
        ``check``. With ``answers`` (``(target, status, body)``): the requests cycle through
        them and every response is checked; with ``check`` each must answer its own request
        (one wrk thread per connection), otherwise one of the mix's requests.
        """
        if self.wrk is None:
            return python_load(port, self.connections, duration, depth, answers)
        if answers is None:
            return run_wrk(self.wrk, self._scripts["check" if check else "load"], port,
                           self.connections, duration, depth)
        name = f"mix-{'exact' if check else 'any'}-{hash(answers) & 0xffffffff:x}"
        script = self._scripts.get(name) or self._write(name, mix_script(answers, check))
        return run_wrk(self.wrk, script, port, self.connections, duration, depth,
                       threads=self.connections if check else 1)

    def close(self) -> None:
        self._folder.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
