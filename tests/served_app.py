"""
A small Kyoukai app for the tests that start real servers in subprocesses (the CLI, gunicorn,
``asphalt run``). The subprocess imports it as ``served_app:app`` from the tests directory.
"""
import asyncio
import os
import sys
import time

import kyoukai_fast.compat

kyoukai_fast.compat.apply()

from kyoukai import Kyoukai  # noqa: E402
from kyoukai.util import as_json  # noqa: E402

app = Kyoukai("served")


def _pipeline() -> str:
    """Which pipeline runs the calling route: "stock" when Kyoukai's own process_request is
    on the (coroutine) call chain, else "fast" (kyoukai_fast's pipeline)."""
    frame = sys._getframe(1)
    while frame is not None:
        if (frame.f_code.co_name == "process_request"
                and frame.f_globals.get("__name__") == "kyoukai.app"):
            return "stock"
        frame = frame.f_back
    return "fast"


@app.route("/")
async def index(ctx):
    return "Hello from served_app"


@app.route("/info")
async def info(ctx):
    protocol = type(ctx.environ["kyoukai.protocol"])
    return as_json({
        "pid": os.getpid(),
        "protocol": f"{protocol.__module__}.{protocol.__name__}",
        "loop": type(asyncio.get_running_loop()).__module__,
        "scheme": ctx.environ["wsgi.url_scheme"],
        "server_port": ctx.environ["SERVER_PORT"],
        "pipeline": _pipeline(),
    })


@app.route("/users/<int:user_id>")
async def user(ctx, user_id):
    return as_json({"user_id": user_id})


@app.route("/echo", methods=["POST"])
async def echo(ctx):
    return as_json({"length": len(ctx.request.get_data())})


@app.route("/slow")
async def slow(ctx):
    print(f"slow request started in {os.getpid()}", flush=True)  # tests wait for this line
    await asyncio.sleep(float(ctx.request.args.get("s", "1")))
    return "slow done"


@app.route("/block")
async def block(ctx):
    time.sleep(float(ctx.request.args.get("s", "5")))  # blocks the event loop on purpose
    return "blocked"


@app.route("/explode")
async def explode(ctx):
    raise RuntimeError("served_app exploded on purpose")
