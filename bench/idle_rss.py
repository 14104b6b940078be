"""
RSS growth per idle keep-alive connection of a server process: each connection made one request
and stays open; the server's RSS is read before and after (``bench/idle_memory.py`` is the
in-process, tracemalloc counterpart).
"""
from __future__ import annotations

import socket
import time

from processes import RESULTS, Server, log
from servers import BODY, raise_nofile


def measure_idle_memory(loop_name: str, kinds, count: int, log_dir: str = RESULTS) -> dict:
    """RSS growth per idle keep-alive connection (each made one request, then stays open)."""
    raise_nofile()
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    results = {}
    for kind in kinds:
        server = Server(kind, loop_name, log_dir)
        try:
            def connect_many(n, server=server, kind=kind):
                socks = []
                for _ in range(n):
                    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
                    sock.settimeout(5)
                    sock.sendall(request)
                    data = b""
                    while not data.endswith(BODY):
                        chunk = sock.recv(4096)
                        if not chunk:
                            raise RuntimeError(f"{kind} closed a keep-alive connection")
                        data += chunk
                    socks.append(sock)
                return socks

            # Warm up: allocator arenas, caches, the first connections' one-time costs.
            for sock in connect_many(200):
                sock.close()
            time.sleep(0.5)
            before = server.rss()
            socks = connect_many(count)
            time.sleep(0.5)
            after = server.rss()
            # Still open and still served: one more request on the first and the last.
            for sock in (socks[0], socks[-1]):
                sock.sendall(request)
                if not sock.recv(4096).startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"{kind}: idle connection not served")
            for sock in socks:
                sock.close()
            per_connection = (after - before) / count
            results[kind] = {"rss_before": before, "rss_after": after, "connections": count,
                             "bytes_per_connection": per_connection}
            log(f"  idle memory {loop_name:8} {kind:16} {per_connection:8.0f} B/connection")
        finally:
            server.stop()
    return results
