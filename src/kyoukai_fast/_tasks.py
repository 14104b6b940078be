"""
Running a request handler coroutine as an asyncio Task that starts eagerly.

Route code must see what it sees under any asyncio server: ``asyncio.current_task()`` is its
task, ``asyncio.timeout`` and ``asyncio.shield`` work, Asphalt's ``Context`` is entered and left
in one task. Yet most handlers finish without ever suspending, and waiting a loop iteration to
start each one would cost every pipelined request a round of the loop and its batched write.

So the handler's task runs its first step at once, inside ``data_received``: on Python 3.12+ an
eager task (``asyncio.Task(..., eager_start=True)``). On 3.11 with asyncio's own loops, a task
is created as usual and the step it scheduled (the one handle ``call_soon`` appended to the
loop's ready queue) is taken off the queue and run at once: the task's own step, so everything
about the task is as asyncio makes it, and a handler that does not suspend costs no loop turn.
Otherwise (3.10, other loops such as uvloop) a task is created running a small wrapper, and the
handler's first step is taken by hand while that task is the loop's current task, the task then
continuing exactly where the coroutine stopped. A handler that finished in its first step is
answered at once in every case.
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
    _Task = asyncio.Task

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

    def _start_by_wrapper(loop, coro, context):
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

    _BaseEventLoop = asyncio.BaseEventLoop
    #: Loop class -> whether its ``call_soon`` is asyncio's own (one handle appended to
    #: ``loop._ready``), so that a new task's first step can be taken off the queue.
    _queue_steppable: dict = {}

    def _steppable(loop_type) -> bool:
        steppable = _queue_steppable.get(loop_type)
        if steppable is None:
            steppable = _queue_steppable[loop_type] = (
                sys.version_info >= (3, 11) and issubclass(loop_type, _BaseEventLoop)
                and loop_type.call_soon is _BaseEventLoop.call_soon
                and loop_type._call_soon is _BaseEventLoop._call_soon)
        return steppable

    def start_in_task(loop, coro, context):
        """Run ``coro`` as a task of ``loop`` in ``context``, its first step now.

        :return: ``(task, value, error)``: ``task`` is ``None`` when the coroutine finished in
            its first step, with its result ``value`` or its exception ``error``; otherwise the
            task that runs the rest of it.
        """
        steppable = _queue_steppable.get(type(loop))
        if steppable is None:
            steppable = _steppable(type(loop))
        if not steppable:
            return _start_by_wrapper(loop, coro, context)
        ready = loop._ready
        task = _Task(coro, loop=loop, context=context)
        # The task's step is the handle just queued, unless something else was queued after it
        # (a finalizer run by a garbage collection inside Task()): then it runs in its turn.
        if not ready or getattr(ready[-1]._callback, "__self__", None) is not task:
            return task, None, None
        step = ready.pop()._callback
        # The step makes the task the current one: another task may be (a handler that feeds a
        # connection itself); it is current again afterwards.
        outer = _current_task(loop)
        if outer is not None:
            _leave_task(loop, outer)
        try:
            context.run(step)  # as the loop runs a handle: in the task's context
        except BaseException:  # KeyboardInterrupt, SystemExit, ...: asyncio's step re-raises
            if task.done() and not task.cancelled():
                task.exception()  # (propagating here: not also logged as never retrieved)
            raise
        finally:
            if outer is not None:
                _enter_task(loop, outer)
        if not task.done():
            return task, None, None
        if task.cancelled():
            return None, None, _CancelledError()
        error = task.exception()
        if error is not None:
            return None, None, error
        return None, task.result(), None
