"""
Running a request handler coroutine as an asyncio Task that starts eagerly.

Route code must see what it sees under any asyncio server: ``asyncio.current_task()`` is its
task, ``asyncio.timeout`` and ``asyncio.shield`` work, Asphalt's ``Context`` is entered and left
in one task. Yet most handlers finish without ever suspending, and waiting a loop iteration to
start each one would cost every pipelined request a round of the loop and its batched write.

So the handler's task runs its first step at once, inside ``data_received``: on Python 3.12+ an
eager task (``asyncio.Task(..., eager_start=True)``); before 3.12 a task is created as usual and
its first step is taken by hand while that task is the loop's current task, the task then
continuing (on its own first scheduled step) exactly where the coroutine stopped. A handler that
finished in its first step is answered at once either way.
"""
from __future__ import annotations

import asyncio
import sys
import types

__all__ = ("start_in_task", "EAGER_TASKS")

#: Whether the runtime has eager tasks (Python 3.12+).
EAGER_TASKS = sys.version_info >= (3, 12)

_CancelledError = asyncio.CancelledError


if EAGER_TASKS:
    _Task = asyncio.Task

    def start_in_task(loop, coro, context):
        """Run ``coro`` as a task of ``loop`` in ``context``, its first step now.

        :return: ``(task, value, error)``: ``task`` is ``None`` when the coroutine finished in
            its first step, with its result ``value`` or its exception ``error``; otherwise the
            task that runs the rest of it.
        """
        task = _Task(coro, loop=loop, context=context, eager_start=True)
        if not task.done():
            return task, None, None
        if task.cancelled():
            return None, None, _CancelledError()
        error = task.exception()
        if error is not None:
            return None, None, error
        return None, task.result(), None

else:
    from asyncio.tasks import _enter_task, _leave_task

    _current_task = asyncio.current_task

    @types.coroutine
    def _resume(coro, yielded, context=None):
        """Delegate to ``coro``, which is already suspended having yielded ``yielded``.

        A generator-based coroutine: the task driving it sends values and throws exceptions
        (such as cancellation) exactly as it would into ``coro`` itself, and they are passed on.
        With ``context`` (Python 3.10 only, see :func:`start_in_task`) every step of ``coro``
        runs inside that context.
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

    class _FirstStep:
        """What the hand-taken first step left for the task: whether to go on, and with what."""

        __slots__ = ("suspended", "yielded")

        def __init__(self):
            self.suspended = False
            self.yielded = None

    async def _rest(coro, first, context=None):
        if not first.suspended:
            return None  # answered in the first step
        return await _resume(coro, first.yielded, context)

    def start_in_task(loop, coro, context):
        """Run ``coro`` as a task of ``loop`` in ``context``, its first step now.

        :return: ``(task, value, error)``: ``task`` is ``None`` when the coroutine finished in
            its first step, with its result ``value`` or its exception ``error``; otherwise the
            task that runs the rest of it.
        """
        first = _FirstStep()
        if sys.version_info >= (3, 11):
            task = loop.create_task(_rest(coro, first), context=context)
        else:
            # Python 3.10's tasks cannot run in a given context, only in a copy of the current
            # one, where context-variable tokens the handler set in its first step could not be
            # reset (Asphalt's Context does exactly that). So each step enters ``context``.
            task = loop.create_task(_rest(coro, first, context))
        # The first step runs as the task's: another task may be the current one (a handler
        # that feeds a connection itself); it is current again afterwards.
        outer = _current_task(loop)
        if outer is not None:
            _leave_task(loop, outer)
        _enter_task(loop, task)
        try:
            first.yielded = context.run(coro.send, None)
        except StopIteration as stop:
            return None, stop.value, None
        except (Exception, _CancelledError) as exc:
            return None, None, exc
        finally:
            _leave_task(loop, task)
            if outer is not None:
                _enter_task(loop, outer)
        first.suspended = True
        return task, None, None
