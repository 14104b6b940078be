"""
Running a request handler coroutine without a task when it does not need one.

Most handlers finish without ever suspending (``process_request`` of a hello-world app awaits
nothing that blocks). Creating an ``asyncio.Task`` for each costs more than the handler itself,
so both protocols first step the coroutine by hand; only when it really suspends on a future is
the rest of it handed to a task, which then continues exactly where the coroutine stopped.
"""
from __future__ import annotations

import sys
import types

__all__ = ("continue_in_task",)


@types.coroutine
def _resume(coro, yielded, context=None):
    """Delegate to ``coro``, which is already suspended having yielded ``yielded``.

    A generator-based coroutine: the task driving it sends values and throws exceptions (such as
    cancellation) exactly as it would into ``coro`` itself, and they are passed on. With
    ``context`` (Python 3.10 only, see :func:`continue_in_task`) every step of ``coro`` runs
    inside that context.
    """
    while True:
        try:
            value = yield yielded
        except GeneratorExit:
            if context is None:
                coro.close()
            else:
                context.run(coro.close)
            raise
        except BaseException as exc:  # cancellation and friends go to the handler
            try:
                if context is None:
                    yielded = coro.throw(exc)
                else:
                    yielded = context.run(coro.throw, exc)
            except StopIteration as stop:
                return stop.value
            continue
        try:
            if context is None:
                yielded = coro.send(value)
            else:
                yielded = context.run(coro.send, value)
        except StopIteration as stop:
            return stop.value


async def _finish(coro, yielded, context=None):
    return await _resume(coro, yielded, context)


if sys.version_info >= (3, 11):

    def continue_in_task(loop, coro, yielded, context):
        """A task that runs the rest of ``coro`` (suspended on ``yielded``) in ``context``."""
        return loop.create_task(_finish(coro, yielded), context=context)

else:

    def continue_in_task(loop, coro, yielded, context):
        """A task that runs the rest of ``coro`` (suspended on ``yielded``) in ``context``."""
        # Python 3.10's tasks cannot run in a given context, only in a copy of the current one,
        # where context-variable tokens the handler set before suspending cannot be reset
        # (Asphalt's Context does exactly that). So each step of the handler enters ``context``.
        return loop.create_task(_finish(coro, yielded, context))
