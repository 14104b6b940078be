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


def apply() -> None:
    """Apply every patch Kyoukai needs here. Call before importing ``kyoukai``."""
    patch_collections_aliases()
    patch_form_parser()
