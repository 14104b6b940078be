"""
Process control for the benchmarks: a server subprocess (:class:`Server`, reading its port, its
RSS, CPU time and page faults from ``/proc``), the tools a run needs (:func:`ensure_tool`), and
progress logging.
"""
from __future__ import annotations

import os
import re
import selectors
import shutil
import subprocess
import sys
import time

from servers import PURE_PYTHON

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
SERVE = os.path.join(HERE, "servers.py")


def log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


class Server:
    """One server of :mod:`servers` in its own process; ``port`` once it listens."""

    def __init__(self, kind: str, loop_name: str, log_dir: str = RESULTS):
        self.kind = kind
        self.loop_name = loop_name
        os.makedirs(log_dir, exist_ok=True)
        # A server's own complaints (stock Kyoukai's tracebacks under pipelining) go to a log.
        self._log = open(os.path.join(log_dir, f"server-{kind}-{loop_name}.log"), "w")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.path.join(ROOT, "src") + os.pathsep + env.get("PYTHONPATH", "")
        if kind in PURE_PYTHON:
            env["KYOUKAI_FAST_NO_EXTENSIONS"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, SERVE, kind, "--loop", loop_name],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, stderr=self._log)
        self.port = self._read_port(timeout=30.0)

    def _read_port(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                self.stop()
                raise RuntimeError(f"{self.kind} did not start within {timeout} s")
            chunk = os.read(self.proc.stdout.fileno(), 1)
            if not chunk:
                raise RuntimeError(f"{self.kind} exited with {self.proc.wait()}")
            line += chunk
        selector.close()
        match = re.match(rb"PORT (\d+)", line)
        if not match:
            raise RuntimeError(f"{self.kind} said {line!r}")
        return int(match.group(1))

    def rss(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def _stat(self) -> list:
        with open(f"/proc/{self.proc.pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far."""
        fields = self._stat()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def page_faults(self) -> int:
        """Minor page faults of the server process so far: a server that maps fresh memory per
        read shows one or more per request, a steady one almost none."""
        return int(self._stat()[7])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()


def ensure_tool(command: str, package: str) -> str | None:
    """``command`` from PATH, else installed from Debian's ``package``; ``None`` if that cannot
    be done."""
    found = shutil.which(command)
    if found:
        return found
    if shutil.which("apt-get"):
        log(f"{command} not found: installing {package} with apt-get")
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        for step in (["apt-get", "install", "-y", package], ["apt-get", "update"],
                     ["apt-get", "install", "-y", package]):
            subprocess.run(sudo + step, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=600, check=False)
            if shutil.which(command):
                return shutil.which(command)
    return None


def ensure_wrk() -> str | None:
    return ensure_tool("wrk", "wrk")
