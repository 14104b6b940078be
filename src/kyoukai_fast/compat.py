"""
Make stock Kyoukai 2.2.1.post1 import and serve on modern Python and werkzeug.

``apply()`` is idempotent and each patch does nothing where it is not needed.
"""
from __future__ import annotations

import collections
import collections.abc

__all__ = ("apply",)

_ABC_ALIASES = ("Mapping", "MutableMapping", "Sequence", "MutableSequence", "Iterable",
                "Iterator", "Callable", "Set", "MutableSet", "Hashable", "Sized", "Container")


def patch_collections_aliases() -> bool:
    """Restore ``collections.Mapping`` & co. (removed in Python 3.10); Kyoukai's router uses them."""
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
    Kyoukai.handle_httpexception = _handle_httpexception
    return True


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


def apply() -> None:
    """Apply every patch Kyoukai needs here. Call before importing ``kyoukai``."""
    patch_collections_aliases()
    patch_form_parser()
    patch_error_response()
