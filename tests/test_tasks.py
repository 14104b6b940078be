"""
Route code runs inside a real asyncio Task, on both implementations, whether or not it suspends:
``current_task()``, ``asyncio.timeout``, ``asyncio.shield``, context variables that stay with
their request, cancellation when the client goes away, Asphalt's ``Context`` in its host task.
Each test runs with every way the runtime's tasks are started (see ``kyoukai_fast._tasks``).
"""
from __future__ import annotations

import asyncio
import contextvars
import warnings

import pytest
from werkzeug.wrappers import Response

from fakes import open_connection, settle, wait_for_responses
from kyoukai_fast import _tasks
from kyoukai_fast._tasks import start_in_task
from wire import get, parse_responses

# Python 3.11 with asyncio's loops takes a new task's queued step at once; other loops (and
# 3.10) step a wrapper task by hand: both are run here. 3.12+ has eager tasks.
START_MODES = ["eager"] if _tasks.EAGER_TASKS else ["queued step", "wrapper"]


class _NothingSteppable(dict):
    def get(self, key, default=None):
        return False


@pytest.fixture(autouse=True, params=START_MODES)
def start_mode(request, monkeypatch):
    if request.param == "wrapper":
        monkeypatch.setattr(_tasks, "_queue_steppable", _NothingSteppable())
    return request.param

seen = contextvars.ContextVar("seen")


@pytest.mark.parametrize("suspend", [False, True])
def test_handler_runs_in_its_own_task(impl, suspend):
    tasks = []

    async def handler(request):
        before = asyncio.current_task()
        if suspend:
            await asyncio.sleep(0)
        tasks.append((before, asyncio.current_task()))
        return Response("ok")

    async def main():
        protocol, transport, _ = await open_connection(impl, handler)
        protocol.data_received(get("/a") + get("/b"))
        responses = await wait_for_responses(transport, 2)
        assert [r.status for r in responses] == [200, 200]
        outer = asyncio.current_task()
        assert len(tasks) == 2
        for before, after in tasks:
            assert isinstance(before, asyncio.Task) and before is after and before is not outer
        assert tasks[0][0] is not tasks[1][0]
        assert asyncio.current_task() is outer  # the test's own task is current again

    asyncio.run(main())


@pytest.mark.skipif(not hasattr(asyncio, "timeout"), reason="asyncio.timeout is Python 3.11+")
def test_asyncio_timeout_in_a_route(impl):
    async def handler(request):
        if request.path == "/quick":
            async with asyncio.timeout(5):  # never suspends
                return Response("quick")
        try:
            async with asyncio.timeout(0.02):
                await asyncio.sleep(10)
        except TimeoutError:
            return Response("timed out")
        return Response("slept")

    async def main():
        protocol, transport, _ = await open_connection(impl, handler)
        protocol.data_received(get("/quick") + get("/slow") + get("/quick"))
        responses = await wait_for_responses(transport, 3)
        assert [(r.status, r.body) for r in responses] == [
            (200, b"quick"), (200, b"timed out"), (200, b"quick")]

    asyncio.run(main())


def test_asyncio_wait_for_and_shield_in_a_route(impl):
    async def handler(request):
        value = await asyncio.shield(asyncio.sleep(0.001, "shielded"))
        try:
            await asyncio.wait_for(asyncio.sleep(10), 0.01)
        except asyncio.TimeoutError:
            value += " waited"
        return Response(value)

    async def main():
        protocol, transport, _ = await open_connection(impl, handler)
        protocol.data_received(get("/"))
        [response] = await wait_for_responses(transport, 1)
        assert response.body == b"shielded waited"

    asyncio.run(main())


def test_shielded_work_outlives_a_disconnect(impl):
    events = []

    async def work():
        await asyncio.sleep(0.02)
        events.append("work done")

    async def handler(request):
        try:
            await asyncio.shield(work())
        except asyncio.CancelledError:
            events.append("handler cancelled")
            raise
        return Response("late")

    async def main():
        protocol, transport, _ = await open_connection(impl, handler)
        protocol.data_received(get("/"))
        await settle()
        protocol.connection_lost(None)
        await asyncio.sleep(0.05)
        assert events == ["handler cancelled", "work done"]
        assert transport.written == b""

    asyncio.run(main())


@pytest.mark.parametrize("suspend", [False, True])
def test_context_variables_stay_with_their_request(impl, suspend):
    async def handler(request):
        before = seen.get("unset")
        seen.set(request.path)
        if suspend:
            await asyncio.sleep(0.001)
        return Response(f"{before} {seen.get()}")

    async def main():
        first, first_transport, _ = await open_connection(impl, handler)
        second, second_transport, _ = await open_connection(impl, handler)
        first.data_received(get("/1a") + get("/1b"))
        second.data_received(get("/2a"))
        first.data_received(get("/1c"))
        second.data_received(get("/2b"))
        one = await wait_for_responses(first_transport, 3)
        two = await wait_for_responses(second_transport, 2)
        assert [r.body for r in one] == [b"unset /1a", b"unset /1b", b"unset /1c"]
        assert [r.body for r in two] == [b"unset /2a", b"unset /2b"]
        assert seen.get("unset") == "unset"

    asyncio.run(main())


def test_disconnect_cancels_the_handlers_task(impl):
    tasks, events = [], []

    async def handler(request):
        tasks.append(asyncio.current_task())
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            events.append(asyncio.current_task().cancelling())
            raise
        return Response("late")

    async def main():
        protocol, transport, _ = await open_connection(impl, handler)
        protocol.data_received(get("/"))
        await settle()
        protocol.connection_lost(ConnectionResetError("gone"))
        await settle()
        assert events == [1]
        assert tasks[0].cancelled()
        assert parse_responses(transport.take()) == []

    asyncio.run(main())


def test_asphalt_context_is_hosted_by_the_handlers_task(impl):
    from asphalt.core import Context
    from kyoukai import Kyoukai, KyoukaiComponent

    from loopback import free_port
    from test_kyoukai_integration import exchange

    async def main():
        app = Kyoukai("tasks", loop=asyncio.get_running_loop())

        @app.route("/host")
        async def host(ctx):
            return f"{ctx._host_task is asyncio.current_task() is not None}"

        @app.route("/later")
        async def later(ctx):
            await asyncio.sleep(0.001)
            return f"{ctx._host_task is asyncio.current_task() is not None}"

        async with Context() as root:
            port = free_port()
            component = KyoukaiComponent(app, "127.0.0.1", port,
                                         backend=impl.protocol_module.__name__)
            await component.start(root)
            try:
                return await asyncio.wait_for(asyncio.to_thread(
                    exchange, port, [("GET", "/host", None, None),
                                     ("GET", "/later", None, None)]), 20)
            finally:
                component.server.close()
                await component.server.wait_closed()

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Explicitly passing the parent context",
                                DeprecationWarning)
        warnings.filterwarnings("error", "Potential context stack corruption")
        results = asyncio.run(main())
    assert [(status, body) for status, _, body in results] == [(200, b"True"), (200, b"True")]


# --- start_in_task itself ---------------------------------------------------------------------

def test_start_in_task_answers_in_the_first_step_without_a_loop_turn(start_mode):
    ran = []

    async def quick(value):
        ran.append(asyncio.current_task())
        return value

    async def failing():
        raise KeyError("nope")

    async def cancelled():
        raise asyncio.CancelledError()

    async def main():
        loop = asyncio.get_running_loop()
        outer = asyncio.current_task()
        queued = len(loop._ready)
        task, value, error = start_in_task(loop, quick(5), contextvars.copy_context())
        assert (task, value, error) == (None, 5, None)
        assert isinstance(ran[0], asyncio.Task) and ran[0] is not outer
        assert asyncio.current_task() is outer
        if start_mode == "queued step":
            assert len(loop._ready) == queued  # nothing left for the loop to run
            assert ran[0].done() and ran[0].result() == 5
        task, value, error = start_in_task(loop, failing(), contextvars.copy_context())
        assert task is None and value is None and isinstance(error, KeyError)
        task, value, error = start_in_task(loop, cancelled(), contextvars.copy_context())
        assert task is None and value is None and isinstance(error, asyncio.CancelledError)

    asyncio.run(main())


def test_start_in_task_hands_back_a_suspended_task():
    var = contextvars.ContextVar("var")

    async def slow():
        var.set("mine")
        first = asyncio.current_task()
        await asyncio.sleep(0)
        return first is asyncio.current_task(), var.get()

    async def main():
        context = contextvars.copy_context()
        task, value, error = start_in_task(asyncio.get_running_loop(), slow(), context)
        assert isinstance(task, asyncio.Task) and not task.done()
        assert var.get("unset") == "unset" and context[var] == "mine"
        assert await task == (True, "mine")

    asyncio.run(main())


def test_start_in_task_lets_system_exit_propagate(caplog):
    """As from a task the loop steps: SystemExit leaves the step (and is not also logged as a
    task exception never retrieved)."""
    async def leaving():
        raise SystemExit(3)

    async def main():
        with pytest.raises(SystemExit):
            start_in_task(asyncio.get_running_loop(), leaving(), contextvars.copy_context())

    asyncio.run(main())
    import gc

    gc.collect()
    assert "never retrieved" not in caplog.text


@pytest.mark.skipif(_tasks.EAGER_TASKS, reason="no queued step to take on eager-task runtimes")
def test_a_step_not_last_in_the_queue_runs_in_its_turn(monkeypatch, start_mode):
    """Something queued right after the task's step (a finalizer run inside Task()): the task
    is not stepped by hand, and runs on the loop's next turn, as any task does."""
    real_task = asyncio.Task

    def task_then_more(coro, **kwargs):
        task = real_task(coro, **kwargs)
        asyncio.get_running_loop().call_soon(lambda: None)
        return task

    monkeypatch.setattr(_tasks, "_Task", task_then_more)
    ran = []

    async def quick():
        ran.append(1)
        return "late"

    async def main():
        task, value, error = start_in_task(asyncio.get_running_loop(), quick(),
                                           contextvars.copy_context())
        if start_mode == "wrapper":
            assert task is None and value == "late"  # (that path does not queue a step)
        else:
            assert isinstance(task, asyncio.Task) and ran == []
            assert await task == "late"

    asyncio.run(main())
