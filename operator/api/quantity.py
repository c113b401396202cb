"""Kubernetes resource quantities ("500m", "2Gi", "1.5", "1e3"): parse them as Kubernetes does.

parse_quantity("2Gi") == 2 * 1024**3        parse_quantity("500m") == Decimal("0.5")
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY = re.compile(
    r"^(?P<number>[0-9]+(\.[0-9]*)?|\.[0-9]+)"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)

#: the same grammar as a JSON-schema pattern (no named groups), for the CRD
QUANTITY_PATTERN = re.sub(r"\?P<\w+>", "", _QUANTITY.pattern)


def parse_quantity(text: str | int | float) -> Decimal:
    """The value of a non-negative quantity; ValueError (saying what is accepted) when it is not one."""
    match = _QUANTITY.match(str(text).strip())
    if not match:
        raise ValueError(
            f"{text!r} is not a Kubernetes quantity; use a number with an optional suffix, "
            "e.g. 2, 500m, 1.5, 4Gi, 512Mi, 1e3"
        )
    suffix = match["suffix"] or ""
    try:
        number = Decimal(match["number"])
    except InvalidOperation:  # pragma: no cover - the regex admits only valid decimals
        raise ValueError(f"{text!r} is not a number") from None
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    return number * Decimal(10) ** int(suffix[1:])
