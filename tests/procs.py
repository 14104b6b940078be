"""
Real servers in subprocesses for end-to-end tests: start, wait for the line that says where they
listen, talk HTTP over 127.0.0.1, stop. Every wait has a deadline; every socket a timeout.
"""
from __future__ import annotations

import http.client
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from loopback import free_port

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
VENV_BIN = Path(sys.executable).parent
TIMEOUT = 10.0

#: Set when the suite runs from a copy of tests/ against an installed wheel (CI's wheel check):
#: there is no README, examples/ or git checkout beside it.
INSTALLED = bool(os.environ.get("KYOUKAI_FAST_TEST_INSTALLED"))
#: For tests of the checkout itself (README, examples/, installing it): they run in `make test`
#: and are deselected (not skipped) against an installed wheel, by tests/conftest.py.
source_tree_only = pytest.mark.source_tree
#: gunicorn, uvloop and POSIX signals do not exist on Windows.
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX only")


def env(pure: bool = False, **extra) -> dict:
    """The environment of a server subprocess: src and tests importable, an implementation."""
    result = dict(os.environ)
    paths = [str(ROOT / "src"), str(TESTS)]
    if result.get("PYTHONPATH"):
        paths.append(result["PYTHONPATH"])
    result["PYTHONPATH"] = os.pathsep.join(paths)
    result.pop("KYOUKAI_FAST_NO_EXTENSIONS", None)
    if pure:
        result["KYOUKAI_FAST_NO_EXTENSIONS"] = "1"
    result["PYTHONUNBUFFERED"] = "1"
    result.update(extra)
    return result


class Server:
    """A subprocess whose stdout and stderr lines are collected by reader threads."""

    def __init__(self, args, *, env, cwd=TESTS):
        self.args = [str(a) for a in args]
        self.proc = subprocess.Popen(self.args, env=env, cwd=str(cwd), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self.output: list[str] = []
        for name, stream in (("out", self.proc.stdout), ("err", self.proc.stderr)):
            threading.Thread(target=self._read, args=(name, stream), daemon=True).start()

    def _read(self, name, stream):
        for line in stream:
            self.lines.put((name, line.rstrip("\n")))
        stream.close()

    def wait_for(self, pattern: str, timeout: float = TIMEOUT) -> re.Match:
        """The first output line (stdout or stderr) matching ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern!r} within {timeout}s; "
                                     f"output so far:\n" + "\n".join(self.output))
            try:
                _, line = self.lines.get(timeout=min(left, 0.2))
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    time.sleep(0.1)  # let the readers drain
                    if self.lines.empty():
                        raise AssertionError(
                            f"exited ({self.proc.returncode}) before a line matching "
                            f"{pattern!r}:\n" + "\n".join(self.output)) from None
                continue
            self.output.append(line)
            match = regex.search(line)
            if match:
                return match

    def drain(self) -> str:
        """Everything printed so far (after the process ended: everything)."""
        while True:
            try:
                self.output.append(self.lines.get_nowait()[1])
            except queue.Empty:
                return "\n".join(self.output)

    def port(self, pattern=r"(?:http|https)://127\.0\.0\.1:(\d+)", timeout: float = TIMEOUT) -> int:
        return int(self.wait_for(pattern, timeout).group(1))

    def wait_workers(self, count: int, timeout: float = TIMEOUT) -> list:
        """Wait until ``count`` kyoukai_fast gunicorn workers serve (their pids). A signal sent
        to gunicorn while a worker is still booting can be lost by that worker."""
        return [int(self.wait_for(r"kyoukai_fast worker (\d+) serving", timeout).group(1))
                for _ in range(count)]

    def signal(self, signum) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def wait(self, timeout: float = TIMEOUT) -> int:
        code = self.proc.wait(timeout=timeout)
        time.sleep(0.05)
        self.drain()
        return code

    def stop(self) -> None:
        """Make sure it is gone: SIGTERM, then SIGKILL (of this process only)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=TIMEOUT)
        self.drain()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def request(port, method="GET", path="/", body=None, headers=None, timeout=TIMEOUT,
            close=True, connection_class=http.client.HTTPConnection, **connection_kwargs):
    """One request on a new connection: ``(status, headers, body)``."""
    headers = dict(headers or {})
    if close:
        headers.setdefault("Connection", "close")
    conn = connection_class("127.0.0.1", port, timeout=timeout, **connection_kwargs)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def status_of_announced_body(port, path, length, timeout=TIMEOUT) -> int:
    """The status answered to a POST head announcing ``length`` body bytes, none sent: a body
    limit answers before the body (sending it could race the server's close)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Content-Length: {length}\r\n\r\n".encode())
        head = b""
        while b"\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    return int(head.split(b" ", 2)[1])


def get_json(port, path, **kwargs):
    status, _, body = request(port, "GET", path, **kwargs)
    assert status == 200, (status, body)
    return json.loads(body)


def run(args, *, env, cwd=TESTS, timeout=60.0) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], env=env, cwd=str(cwd), capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


class free_port_server:
    """A server that must be told its port up front (``args + [port] + extra``): a free one is
    picked, and picked again if it got taken before the server bound it."""

    def __init__(self, args, extra=(), *, ready, env=None, cwd=TESTS, attempts=5):
        self.args, self.extra, self.ready = list(args), list(extra), ready
        self.env, self.cwd, self.attempts = env, cwd, attempts

    def __enter__(self):
        environment = self.env if self.env is not None else env()
        for attempt in range(self.attempts):
            port = free_port()
            self.server = Server([*self.args, port, *self.extra], env=environment, cwd=self.cwd)
            try:
                self.server.wait_for(self.ready)
                return self.server, port
            except AssertionError:
                self.server.stop()
                if "Address already in use" not in self.server.drain() or \
                        attempt == self.attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def __exit__(self, *exc):
        self.server.stop()
