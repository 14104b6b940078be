"""
A small real Kyoukai app, served by kyoukai_fast.

    cd examples && kyoukai-fast run hello_app:app --port 4444     # the CLI (scripts/serve.sh)
    python examples/hello_app.py [--host 127.0.0.1] [--port 4444] [--backend kyoukai_fast]
"""
import argparse
import asyncio
import logging

import kyoukai_fast.compat

kyoukai_fast.compat.apply()  # stock Kyoukai needs it on Python 3.10+ / werkzeug 3

from asphalt.core import Context  # noqa: E402
from kyoukai import Blueprint, Kyoukai, KyoukaiComponent  # noqa: E402
from kyoukai.util import as_json  # noqa: E402

app = Kyoukai("hello")


@app.route("/")
async def index(ctx):
    return "Hello, world!"


@app.route("/echo", methods=["POST"])
async def echo(ctx):
    return as_json({"body": ctx.request.get_data().decode("utf-8", "replace"),
                    "args": ctx.request.args.to_dict(flat=False)})


@app.route("/slow")
async def slow(ctx):
    await asyncio.sleep(0.01)
    return "slow"


api = Blueprint("api", prefix="/api")


@api.route("/status")
async def status(ctx):
    return as_json({"backend": ctx.environ["kyoukai.protocol"].__class__.__module__})


app.register_blueprint(api)


async def serve(host, port, backend):
    component = KyoukaiComponent(app, host, port, backend=backend)
    async with Context() as ctx:
        await component.start(ctx)
        print(f"Serving {backend} on http://{host}:{port}/", flush=True)
        await asyncio.Event().wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4444)
    parser.add_argument("--backend", default="kyoukai_fast")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app.loop = loop
    try:
        loop.run_until_complete(serve(args.host, args.port, args.backend))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
