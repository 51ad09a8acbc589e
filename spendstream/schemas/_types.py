"""Field types shared by the contracts."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated

from pydantic import Field

# Counts are strict: "12" or 12.5 or true in a token field is a bug in the
# emitting service, and a meter must not guess what was meant.
# A bound far above any context window (10M tokens is the largest published) stops
# a corrupt count from becoming a huge bill, and keeps vectorised pricing in int64.
MAX_TOKENS = 100_000_000
TokenCount = Annotated[int, Field(ge=0, le=MAX_TOKENS, strict=True)]
OptionalCount = Annotated[int | None, Field(default=None, ge=0, le=MAX_TOKENS, strict=True)]
Label = Annotated[str | None, Field(default=None, min_length=1, max_length=256)]
Identifier = Annotated[str, Field(min_length=1, max_length=128)]

# An amount of money as the decimal text it was reported in ("0.000123"): JSON numbers
# are read as binary floats by most decoders (orjson, msgspec, JavaScript), which cannot
# hold 0.1 exactly; text keeps every digit the provider sent. The pattern admits what a
# Decimal(38, 18) column holds without rounding (20 integer and 18 fractional digits),
# no sign, exponent or spaces, so the stored number is exactly the one sent.
DECIMAL_TEXT_PATTERN = r"^[0-9]{1,20}(\.[0-9]{1,18})?$"
DecimalText = Annotated[str | None, Field(default=None, max_length=39, pattern=DECIMAL_TEXT_PATTERN)]


def decimal_text(amount: Decimal | float | int | str) -> str:
    """``amount`` as the contract's decimal text (``DecimalText``), for adapters of provider responses.

    A float is taken as its shortest repr, which is the text a JSON number was written
    with by any serializer that writes shortest round-trip numbers (as OpenRouter's
    ``usage.cost`` is): ``1e-05`` becomes ``"0.00001"``. Raises ValueError for what the
    contract refuses (negative, not finite, more than 18 decimals): never rounded.
    """
    try:
        number = Decimal(repr(amount) if isinstance(amount, float) else str(amount))
    except InvalidOperation:
        raise ValueError(f"not a decimal amount: {str(amount)[:40]!r}") from None
    text = f"{number:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if not re.fullmatch(DECIMAL_TEXT_PATTERN, text):
        raise ValueError(f"{text[:45]!r} is not a cost the contract holds exactly "
                         "(non-negative, at most 20 integer and 18 decimal digits)")
    return text

# Server-side tool calls of one model call (web searches, code executions...). Providers cap
# them per request far below this; the bound keeps a corrupt count from becoming a huge bill.
MAX_CALLS = 100_000
CallCount = Annotated[int, Field(ge=0, le=MAX_CALLS, strict=True)]
