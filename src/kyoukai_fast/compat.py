"""
Make stock Kyoukai 2.2.1.post1 import and serve on modern Python and werkzeug.

Call :func:`apply` before the first ``import kyoukai`` (the ``kyoukai-fast`` command, the gunicorn
worker and ``kyoukai_fast.asphalt`` do it for you)::

    import kyoukai_fast.compat
    kyoukai_fast.compat.apply()

    from kyoukai import Kyoukai, KyoukaiComponent

Four small patches, each of which changes nothing where it is not needed (each returns ``True``
only when it changed something on that call; :func:`apply` is idempotent):

* :func:`patch_collections_aliases`: Python 3.10 removed ``collections.Mapping`` & co.;
  Kyoukai's ``Route.invoke`` checks ``isinstance(params, collections.Mapping)`` on every call of
  a route, so every request got a 500. The aliases are restored where they are missing.
* :func:`patch_form_parser`: werkzeug 3 removed ``FormDataParser.parse_functions``; Kyoukai's
  ``__init__`` registers a JSON form parser into it, so ``import kyoukai`` fails. An empty table
  is added where it is missing (werkzeug 3 never reads it: ``request.get_json()`` works as usual,
  ``request.form`` of a JSON body stays empty, as in werkzeug itself). werkzeug 2.x keeps its
  own table and is left alone.
* :func:`patch_component_loop`: ``KyoukaiComponent.start`` serves on ``app.loop``, the loop that
  was current when the app object was made. Asphalt 4's runner (so ``Kyoukai.run()`` too) starts
  components in a loop of its own, so the server was registered on a loop that never runs and
  every connection hung unanswered. ``start`` now first points ``app.loop`` at the running loop
  (nothing changes when it already is that loop). With the kyoukai_fast backend it also checks
  the component's settings first: a bad one raises ``SettingError`` from ``start``, and
  nothing is served.
* :func:`patch_error_response`: Kyoukai's own bug, on every Python and werkzeug:
  ``Kyoukai.handle_httpexception`` returns ``None`` for a plain 404 / 405 (no error handler), so
  the client gets a 500 "critical server error" instead of the error page. Replaced only when
  the installed Kyoukai shows the bug (it is tried once on a plain 404).
"""
from __future__ import annotations

import asyncio
import collections
import collections.abc
import functools

__all__ = ("apply", "patch_collections_aliases", "patch_form_parser", "patch_component_loop",
           "patch_error_response")

_ABC_ALIASES = ("Mapping", "MutableMapping", "Sequence", "MutableSequence", "Iterable",
                "Iterator", "Callable", "Set", "MutableSet", "Hashable", "Sized", "Container")


def patch_collections_aliases() -> bool:
    """Restore ``collections.Mapping`` & co. (gone since Python 3.10): Kyoukai's router uses
    them."""
    changed = False
    for name in _ABC_ALIASES:
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))
            changed = True
    return changed


def patch_form_parser() -> bool:
    """Give werkzeug 3's ``FormDataParser`` the ``parse_functions`` table Kyoukai registers into."""
    from werkzeug.formparser import FormDataParser

    if hasattr(FormDataParser, "parse_functions"):
        return False
    FormDataParser.parse_functions = {}
    return True


def patch_component_loop() -> bool:
    """Make ``KyoukaiComponent.start`` serve on the running loop, with kyoukai_fast's settings
    checked first (see the module docstring)."""
    try:
        from kyoukai.asphalt import KyoukaiComponent
    except Exception:  # Kyoukai (or Asphalt) not installed: nothing to patch
        return False
    original = KyoukaiComponent.start
    if getattr(original, "_kyoukai_fast_patched", False):
        return False

    @functools.wraps(original)
    async def start(self, ctx):
        from ._config import serves_with_kyoukai_fast, validate_component

        if serves_with_kyoukai_fast(self):
            validate_component(self)  # a bad setting fails here, before anything is served
        loop = asyncio.get_running_loop()
        if self.app.loop is not loop:
            self.app.loop = loop
        return await original(self, ctx)

    start._kyoukai_fast_patched = True
    KyoukaiComponent.start = start
    return True


def patch_error_response() -> bool:
    """Make ``Kyoukai.handle_httpexception`` return the error response it builds.

    In 2.2.1.post1 it returns the response only when its status differs from the exception's
    code: every plain 404 / 405 / 500, and every error handler that keeps the code, gives
    ``None``. ``process_request`` then fails on ``None.headers`` (for errors raised in a route)
    or hands ``None`` to the backend, so the client gets a 500 instead of the error page.
    The replacement keeps the lookup order (the route's blueprint, then the root blueprint,
    else werkzeug's own page) and the fallbacks for failing handlers, and always returns.
    """
    try:
        from kyoukai.app import Kyoukai
    except Exception:  # Kyoukai (or Asphalt) not installed: nothing to patch
        return False
    if getattr(Kyoukai.handle_httpexception, "_kyoukai_fast_patched", False):
        return False
    if answers_plain_404(Kyoukai.handle_httpexception):
        return False  # a Kyoukai without the bug
    Kyoukai.handle_httpexception = _handle_httpexception
    return True


def answers_plain_404(handle_httpexception) -> bool:
    """Whether ``handle_httpexception`` returns the 404 page for a ``NotFound`` that has no error
    handler (stock 2.2.1.post1 returns ``None``). Runs it once on stand-in app and context."""
    from types import SimpleNamespace

    from werkzeug.exceptions import NotFound
    from werkzeug.test import create_environ

    environ = create_environ("/kyoukai-fast-compat-probe")
    app = SimpleNamespace(root=SimpleNamespace(get_errorhandler=lambda exception: None))
    ctx = SimpleNamespace(bp=None, environ=environ)
    coro = handle_httpexception(app, ctx, NotFound(), environ)
    try:
        coro.send(None)
    except StopIteration as done:
        return getattr(done.value, "status_code", None) == 404
    except Exception:
        return False
    coro.close()  # it waited on something: not the plain code path this probe knows
    return False


async def _handle_httpexception(self, ctx, exception, environ=None):
    import logging

    from werkzeug.exceptions import HTTPException, InternalServerError
    from werkzeug.wrappers import Response

    log = logging.getLogger("Kyoukai")
    if environ is None:
        environ = ctx.environ
    handler = (ctx.bp or self.root).get_errorhandler(exception)
    if not handler:
        handler = self.root.get_errorhandler(exception)
    if not handler:
        make_response = exception.get_response
    else:
        try:
            handled = await handler.invoke(ctx, args=(exception,))
            make_response = lambda environ: handled  # noqa: E731
        except HTTPException as raised:
            log.warning("Error handler raised %r; using its response", raised)
            make_response = raised.get_response
        except Exception as failure:
            log.exception("Error in error handler!")
            make_response = InternalServerError(original_exception=failure).get_response
    try:
        response = make_response(environ=environ)
    except Exception:
        log.critical("Building the response to a %s failed", exception.code, exc_info=True)
        response = Response("Critical server error. Your application is broken.", status=500)
    if response.status_code != exception.code:
        log.warning("Error handler returned code %s for an exception with code %s",
                    response.status_code, exception.code)
    return response


_handle_httpexception._kyoukai_fast_patched = True


def apply() -> dict:
    """Apply every patch Kyoukai needs here. Call before importing ``kyoukai``.

    :return: which patches changed something on this call, by name.
    """
    # In this order: the last two import Kyoukai, which needs the first two.
    return {
        "collections_aliases": patch_collections_aliases(),
        "form_parser": patch_form_parser(),
        "component_loop": patch_component_loop(),
        "error_response": patch_error_response(),
    }
