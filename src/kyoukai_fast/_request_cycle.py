"""
One request's cycle, whatever framed it: environ → ``Request`` → the app → the response.

HTTP/1.1 (both twins) and HTTP/2 differ in how a request arrives and how its response is framed;
what happens in between is written here once:

* :func:`set_input`: the body joined, its ``Content-Encoding`` decoded, ``wsgi.input`` set;
* :func:`start_handler`: the app's handler (``process_request``) called with the ``Request``, in
  an asyncio Task of its own, in a copy of the context, its first step taken at once
  (:func:`~._tasks.start_in_task`): a handler that does not suspend is answered at once;
* :func:`response_or_error`: what a ``None`` from stock Kyoukai's pipeline is answered with;
* :func:`final_response_parts`: status, headers and body of a final response, for a framing that
  is not HTTP/1.1's (HTTP/1.1 renders its whole head at once with ``_wsgi.render_response``).

The compiled twin keeps its own copy of the first two: that is the hot path of every request.
"""
from __future__ import annotations

import contextvars
import io

from werkzeug.exceptions import InternalServerError

from ._body import decode_body
from ._errors import logger
from ._input import EMPTY_INPUT
from ._rendering import response_parts
from ._tasks import start_in_task

__all__ = ("set_input", "start_handler", "response_or_error", "final_response_parts")


def set_input(environ: dict, chunks, max_body_size: int) -> None:
    """Give the request its body: ``chunks`` (a list of ``bytes`` or ``None``) as ``wsgi.input``.

    A body with a ``Content-Encoding`` is decoded first (within ``max_body_size``) and
    ``CONTENT_LENGTH`` set to the decoded length. Raises the HTTPException to answer for a body
    that cannot be decoded or is too large once decoded.
    """
    if chunks is None:
        body = b""
    elif len(chunks) == 1:
        body = chunks[0]
    else:
        body = b"".join(chunks)
    encoding = environ.get("HTTP_CONTENT_ENCODING")
    if encoding is not None and body:
        body = decode_body(body, encoding, max_body_size)
        environ["CONTENT_LENGTH"] = str(len(body))
    environ["wsgi.input"] = io.BytesIO(body) if body else EMPTY_INPUT


def start_handler(handle, request, parent_context, loop):
    """Run ``handle(request, parent_context)`` (the app's ``process_request``) as a task of
    ``loop`` in a copy of the current context, its first step now.

    Returns ``(task, value, error)`` (see :func:`~._tasks.start_in_task`): ``task`` is ``None``
    when the handler finished without suspending, with its response ``value`` or the exception
    ``error`` it raised. What calling ``handle`` raises propagates (the caller answers it with a
    500).
    """
    context = contextvars.copy_context()
    coro = handle(request, parent_context)
    return start_in_task(loop, coro, context)


def response_or_error(response, req):
    """``response``, or a 500 page for the ``None`` stock Kyoukai returns for an HTTP error
    without a custom handler (logged: the app has a bug)."""
    if response is not None:
        return response
    logger.error("process_request returned no response for %s %s", req.method,
                 req.environ.get("RAW_URI"))
    return InternalServerError().get_response(req.environ)


def _close(app_iter) -> None:
    close = getattr(app_iter, "close", None)
    if close is not None:
        close()


def final_response_parts(response, environ: dict):
    """``(status, headers, body, app_iter)`` of a final response, framing left to the caller.

    ``body`` is the buffered body (empty for ``HEAD``); ``app_iter``, when not ``None``, is the
    body to stream instead (the caller closes it). A body that cannot go out (``HEAD``, 204,
    304) is closed here. A 1xx status from the app is not a final response: ``ValueError``
    (the caller answers with a 500).
    """
    status, headers, body = response_parts(response, environ)
    app_iter = None
    if type(body) is not bytes:
        app_iter, body = body, b""
    if status[:1] == "1":
        _close(app_iter)
        raise ValueError("an app returned an interim (1xx) status as its response: " + status)
    head_only = environ.get("REQUEST_METHOD") == "HEAD"
    if app_iter is not None and (head_only or status[:3] in ("204", "304")):
        _close(app_iter)
        app_iter = None
    if head_only:
        body = b""
    return status, headers, body, app_iter
