"""
``kyoukai-fast run --reload``: restart the server when a watched file changes (development).

As uvicorn does, with the same file watcher (watchfiles): this process binds the listening
sockets once and runs the server in a child process (the same command line), which inherits
them, so the address stays the same across restarts and no request finds the port closed for
long. A change to a ``.py`` or ``.yml`` / ``.yaml`` file under the watched directories (the
current one, or each ``--reload-dir``) stops the child gracefully (SIGTERM) and starts a new one.
A child that exits by itself (a syntax error, say) is started again at the next change.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

from . import _serve

__all__ = ("supervise",)

EXTENSIONS = (".py", ".pyx", ".yml", ".yaml")
#: Seconds a child has to stop after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0


def supervise(args, argv: list) -> int:
    from watchfiles import DefaultFilter, watch

    from .cli import PROG, RELOAD_FDS_ENV, listening_sockets

    directories = [os.path.abspath(d) for d in (args.reload_dir or [os.getcwd()])]
    for directory in directories:
        if not os.path.isdir(directory):
            raise _serve.TargetError(f"--reload-dir {directory}: not a directory")
    _serve.cwd_importable()
    target = _serve.Target(args.target)
    if _serve.is_config_spec(args.target):
        target = _serve.load_target(args.target)  # its addresses: bound here
    listening = listening_sockets(args, target)
    sockets = [sock for sock, _ in listening]
    fds = [sock.fileno() for sock in sockets]
    for fd in fds:
        os.set_inheritable(fd, True)
    environment = dict(os.environ, **{RELOAD_FDS_ENV: ",".join(map(str, fds))})
    command = [sys.executable, "-m", "kyoukai_fast", *argv]

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    previous = {signum: signal.signal(signum, on_signal)
                for signum in (signal.SIGINT, signal.SIGTERM)}

    class SourceFilter(DefaultFilter):
        def __call__(self, change, path):
            return path.endswith(EXTENSIONS) and super().__call__(change, path)

    def start():
        return subprocess.Popen(command, env=environment, pass_fds=fds)

    print(f"{PROG}: watching for changes in {', '.join(directories)}", flush=True)
    child = start()
    try:
        for changes in watch(*directories, watch_filter=SourceFilter(), stop_event=stop,
                             rust_timeout=500, yield_on_timeout=True):
            if stop.is_set():
                break
            if not changes:
                continue
            changed = sorted({os.path.relpath(path) for _, path in changes})
            print(f"{PROG}: reloading: {', '.join(changed)} changed", flush=True)
            _stop(child)
            child = start()
    finally:
        _stop(child)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for sock in sockets:
            sock.close()
        if args.uds is not None:
            try:
                os.unlink(args.uds)
            except OSError:
                pass
    return 0


def _stop(child) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
