"""Checks of the values a .dna header holds, shared by the reader and the decoders.

A header is JSON written by anyone: a number may be too large for a float (a 400-digit
integer, or ``1e400``, which Python parses as infinity), an object nested too deeply for
the parser, an integer too long to convert. Each of those must be a `CorruptFileError`,
never an OverflowError, RecursionError or ValueError from wherever the value is used.
"""

from __future__ import annotations

import json
import math
from typing import Any

from weightdna.errors import CorruptFileError

# No field of the format needs more: sizes and offsets are below 2^64 (20 digits). Longer
# integers are refused while parsing, so every integer a header holds converts to a finite
# float (and Python's own limit on converting long digit strings is never reached).
MAX_INTEGER_DIGITS = 20


def is_int(value: object) -> bool:
    """An integer, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def cut_digits(value: object, significant: int) -> object:
    """A finite number cut towards zero to ``significant`` decimal digits (its JSON is then
    short: 0.00521, not 0.0052115460857748985); anything else as it is."""
    if not (is_finite_number(value) and 1e-290 < abs(value) < 1e290):
        return value
    digits = significant - 1 - math.floor(math.log10(abs(value)))
    scale = 10.0**digits
    return math.trunc(value * scale) / scale


def is_finite_number(value: object) -> bool:
    """An int or float (not a bool) whose value as a float is finite."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _reject_constant(token: str) -> None:
    raise CorruptFileError(f"{token} is not a JSON number.")


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise CorruptFileError(f"an integer of {len(text.lstrip('-'))} digits (at most "
                               f"{MAX_INTEGER_DIGITS}).")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise CorruptFileError(f"the number {text[:40]} is too large for a float.")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise CorruptFileError("a duplicate key in one object.")
    return result


def load_json(text: str, what: str) -> Any:
    """Parse JSON strictly: no NaN/Infinity, no duplicate keys, no number beyond a float or
    `MAX_INTEGER_DIGITS`; anything wrong, nesting too deep included, is a CorruptFileError
    that names ``what``."""
    try:
        return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_reject_constant,
                          parse_int=_parse_int, parse_float=_parse_float)
    except CorruptFileError as exc:
        raise CorruptFileError(f"{what}: {exc}") from exc
    except RecursionError as exc:
        raise CorruptFileError(f"{what} is nested too deeply.") from exc
    except ValueError as exc:  # JSONDecodeError
        raise CorruptFileError(f"{what} is not valid JSON ({exc}).") from exc
