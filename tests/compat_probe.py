"""
Run in a fresh interpreter by test_compat.py: apply only the named kyoukai_fast.compat patches,
import stock Kyoukai, serve a real app on 127.0.0.1 port 0 through KyoukaiComponent with the given
backend, and print what happened as one JSON line.

    python compat_probe.py BACKEND [PATCH ...]
"""
import asyncio
import http.client
import json
import sys
import traceback

from kyoukai_fast import compat

backend, patches = sys.argv[1], sys.argv[2:]
report = {"patched": {name: getattr(compat, f"patch_{name}")() for name in patches}}
try:
    from asphalt.core import Context
    from kyoukai import Kyoukai, KyoukaiComponent
except Exception as exc:
    report["import_error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(report))
    sys.exit(0)


def exchange(port):
    results = {}
    for method, path in (("GET", "/"), ("GET", "/users/5"), ("GET", "/missing"),
                         ("POST", "/"), ("GET", "/teapot")):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request(method, path, headers={"Connection": "close"})
            response = conn.getresponse()
            results[f"{method} {path}"] = [response.status, response.getheader("Allow"),
                                           response.read().decode("utf-8", "replace")[:200]]
        except Exception as exc:
            results[f"{method} {path}"] = [None, None, f"{type(exc).__name__}: {exc}"]
        finally:
            conn.close()
    return results


async def main():
    app = Kyoukai("compat-probe", loop=asyncio.get_running_loop())

    @app.route("/")
    async def index(ctx):
        return "index"

    @app.route("/users/<int:user_id>")
    async def user(ctx, user_id):
        return f"user {user_id}"

    @app.route("/teapot")
    async def teapot(ctx):
        from werkzeug.exceptions import abort

        abort(418)

    async with Context() as ctx:
        component = KyoukaiComponent(app, "127.0.0.1", 0, backend=backend)
        await component.start(ctx)
        port = component.server.sockets[0].getsockname()[1]
        try:
            report["responses"] = await asyncio.wait_for(asyncio.to_thread(exchange, port), 30)
        finally:
            component.server.close()
            await component.server.wait_closed()


try:
    asyncio.run(main())
except Exception:
    report["error"] = traceback.format_exc()
print(json.dumps(report))
