"""
A Kyoukai app for tests/test_deploy.py, which copies it into a temporary directory and serves it
with the installed ``kyoukai-fast`` command from there (as a user's own app would be).
"""
import asyncio
import os

import kyoukai_fast.compat

kyoukai_fast.compat.apply()

from kyoukai import Kyoukai  # noqa: E402
from kyoukai.util import as_json  # noqa: E402

#: tests/test_deploy.py rewrites this line to check that --reload serves the new code.
VERSION = "one"

app = Kyoukai("deploy")


@app.route("/")
async def index(ctx):
    return f"version {VERSION}"


@app.route("/env")
async def env(ctx):
    environ = ctx.environ
    return as_json({key: environ.get(key) for key in (
        "REMOTE_ADDR", "REMOTE_PORT", "wsgi.url_scheme", "SCRIPT_NAME", "PATH_INFO")} | {
        "pid": os.getpid()})


@app.route("/users/<int:user_id>")
async def user(ctx, user_id):
    return as_json({"user_id": user_id})


@app.route("/slow")
async def slow(ctx):
    print(f"slow request started in {os.getpid()}", flush=True)  # tests wait for this line
    await asyncio.sleep(float(ctx.request.args.get("s", "1")))
    return "slow done"
