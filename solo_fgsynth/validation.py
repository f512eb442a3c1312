"""The one way a config value is checked: each check names the key, the value and what is allowed.

The method's knobs, fgmarks' knobs, the launcher's and the zoo manifest's fields all go through
these checks, so every refusal reads ``KEY=VALUE is out of range: allowed is ...`` (or ``is not
supported: allowed are ...``) and is a :class:`~solo_fgsynth.errors.ConfigValueError` unless the
caller names its own :class:`~solo_fgsynth.errors.UserError` subclass.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from numbers import Integral, Real
from typing import Any

from solo_fgsynth.errors import ConfigValueError, UserError


def is_number(value: object) -> bool:
    """A real number (numpy's included), not a bool."""
    return isinstance(value, Real) and not isinstance(value, bool)


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


def check_number(
    key: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    why: str = "",
    error: type[UserError] = ConfigValueError,
) -> float:
    """``value`` as a float if it is a finite number within the bounds, else one line naming it.

    ``why`` follows the allowed range in parentheses (what the number means).
    """
    interval = _interval(low, high, low_open, high_open)
    if low is not None and high is not None:
        allowed = f"a number in {interval}"
    else:
        allowed = f"a finite number {interval}".rstrip()
    fits = is_number(value) and math.isfinite(float(value))  # type: ignore[arg-type]
    if fits:
        number = float(value)  # type: ignore[arg-type]
        fits = (low is None or (number > low if low_open else number >= low)) and (
            high is None or (number < high if high_open else number <= high)
        )
    if not fits:
        because = f" ({why})" if why else ""
        raise error(f"{key}={value!r} is out of range: allowed is {allowed}{because}")
    return float(value)  # type: ignore[arg-type]


def check_int(
    key: str,
    value: object,
    low: int | None = None,
    high: int | None = None,
    *,
    why: str = "",
    error: type[UserError] = ConfigValueError,
) -> int:
    """``value`` as an int if it is an integer (not a bool) within the bounds, else one line."""
    if low is not None and high is not None:
        allowed = f"an integer in [{low}, {high}]"
    else:
        allowed = f"an integer {_interval(low, high, False, False)}".rstrip()
    if (
        not isinstance(value, Integral)
        or isinstance(value, bool)
        or (low is not None and value < low)
        or (high is not None and value > high)
    ):
        because = f" ({why})" if why else ""
        raise error(f"{key}={value!r} is out of range: allowed is {allowed}{because}")
    return int(value)


def check_choice(
    key: str, value: object, allowed: Iterable[Any], *, error: type[UserError] = ConfigValueError
) -> Any:
    """``value`` if it is one of ``allowed``, else one line listing them."""
    allowed = list(allowed)
    if value not in allowed:
        raise error(f"{key}={value!r} is not supported: allowed are {', '.join(map(str, allowed))}")
    return value


def check_bool(key: str, value: object, *, error: type[UserError] = ConfigValueError) -> bool:
    """``value`` if it is true or false (not 0/1 or a string), else one line naming it."""
    if not isinstance(value, bool):
        raise error(f"{key}={value!r} is not supported: allowed is true or false")
    return value


def check_known_keys(
    given: Iterable[str],
    allowed: Iterable[str],
    owner: str,
    prefix: str = "",
    *,
    error: type[UserError] = ConfigValueError,
) -> None:
    """Refuse a key of ``given`` that is not a knob of ``owner``, naming the closest knob and
    every allowed one; ``prefix`` is where the keys live in the config (``method_kwargs.``)."""
    allowed = sorted(allowed)
    for key in given:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise error(
                f"{prefix}{key} is not a knob of {owner}{hint}; allowed are {', '.join(allowed)}"
            )
