"""
Checking settings when a server starts, whatever they come from.

Settings reach kyoukai_fast from keyword arguments of ``KyoukaiComponent``, an Asphalt YAML
block, the command line, the gunicorn worker and environment variables. Each is checked here, by
one set of rules derived from what the setting is declared as (the annotation and ``limit``
metadata of a :class:`~kyoukai_fast.ProtocolConfig` field, or :func:`env_flag` for a switch), so
that a bad value is one line naming the setting and the value before anything is served, never a
reset connection later. Light on purpose: :mod:`kyoukai_fast._implementation` imports it first.
"""
from __future__ import annotations

import difflib
import math
import os
import re
import sys

__all__ = ("SettingError", "limit", "convert", "check_unknown", "env_flag", "port_number")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


class SettingError(ValueError):
    """A bad setting: the message is one line naming the setting and its value."""


def _bad(name: str, value, reason: str) -> SettingError:
    return SettingError(f"invalid kyoukai_fast setting {name}={value!r}: {reason}")


def limit(minimum=0, maximum=None, above=None) -> dict:
    """Field metadata: the range of a number setting (``above``: exclusive lower bound).

    Numbers without it must be at least 0 (and an ``int`` at most ``sys.maxsize``).
    """
    return {"minimum": minimum, "maximum": maximum, "above": above}


def _kinds(annotation) -> frozenset:
    """The kinds an annotation names: ``int``, ``float | None``, ``Optional[int]``, as objects
    or as the strings postponed annotations are."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", None)
    if text is None or "[" in str(annotation) or "|" in str(annotation):
        text = str(annotation)
    names = {word.rsplit(".", 1)[-1] for word in re.findall(r"[A-Za-z_][\w.]*", text)}
    if "Optional" in names:
        names.add("None")
    return frozenset(names)


def convert(name: str, annotation, value, metadata=None):
    """``value`` as the setting ``name`` declared with ``annotation`` (and ``limit`` metadata).

    Strings are read as a command line or an environment variable would give them; an ``int``
    setting refuses fractions (1.9), a number setting refuses booleans, NaN and infinity.

    :raises SettingError: with one line naming the setting and the value.
    """
    kinds = _kinds(annotation)
    if value is None:
        if "None" in kinds:
            return None
        raise _bad(name, value, "a value is required")
    if "bool" in kinds:
        return _flag(name, value)
    if "int" in kinds:
        number = _integer(name, value)
    elif "float" in kinds:
        number = _real(name, value)
    elif "str" in kinds:
        if not isinstance(value, str):
            raise _bad(name, value, "expected a string")
        return value
    else:
        return value  # a kind without rules of its own (checked where it is used)
    return _in_range(name, value, number, metadata or {})


def _flag(name: str, value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise _bad(name, value, "expected true or false (1/true/yes, 0/false/no)")


def _integer(name: str, value) -> int:
    if isinstance(value, bool):
        raise _bad(name, value, "expected a whole number, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return int(value)
        raise _bad(name, value, "expected a whole number")
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise _bad(name, value, "expected a whole number") from None
    raise _bad(name, value, f"expected a whole number, not {type(value).__name__}")


def _real(name: str, value) -> float:
    if isinstance(value, bool):
        raise _bad(name, value, "expected a number, not a boolean")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _bad(name, value, "expected a number") from None
    else:
        raise _bad(name, value, f"expected a number, not {type(value).__name__}")
    if not math.isfinite(number):
        raise _bad(name, value, "expected a finite number")
    return number


def _in_range(name: str, value, number, metadata):
    minimum = metadata.get("minimum", 0)
    maximum = metadata.get("maximum")
    above = metadata.get("above")
    if maximum is None and isinstance(number, int):
        maximum = sys.maxsize  # what a C size holds
    if above is not None and not number > above:
        raise _bad(name, value, f"must be more than {above}")
    if minimum is not None and number < minimum:
        raise _bad(name, value, "must not be negative" if minimum == 0
                   else f"must be at least {minimum}")
    if maximum is not None and number > maximum:
        raise _bad(name, value, f"must be at most {maximum}")
    return number


def check_unknown(settings: dict, known, others=()) -> None:
    """Refuse a key of ``settings`` that is no setting but close to one's name (a misspelling).

    ``others``: keys that belong to someone else (Kyoukai's and Asphalt's own component
    settings). A key far from every setting name is left alone: Kyoukai copies a component's
    settings into its app's ``config``, where an app may keep its own.
    """
    known = list(known)
    for key, value in settings.items():
        if not isinstance(key, str) or key in known or key in others:
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
        if close:
            raise SettingError(f"unknown kyoukai_fast setting {key}={value!r} "
                               f"(did you mean {close[0]}?)")


def env_flag(name: str, environ=None) -> bool:
    """An environment switch: ``1/true/yes/on`` or ``0/false/no/off/empty`` (unset: false).

    :raises SettingError: for any other value.
    """
    value = (os.environ if environ is None else environ).get(name)
    if value is None:
        return False
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise SettingError(f"invalid environment variable {name}={value!r}: expected 1/true/yes "
                       "or 0/false/no (or empty)")


def port_number(name: str, value) -> int:
    """A TCP port, 0 (any free one) to 65535."""
    return _in_range(name, value, _integer(name, value), {"minimum": 0, "maximum": 65535})
