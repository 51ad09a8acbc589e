"""Field types shared by the contracts."""

from __future__ import annotations

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
# Server-side tool calls of one model call (web searches, code executions...). Providers cap
# them per request far below this; the bound keeps a corrupt count from becoming a huge bill.
MAX_CALLS = 100_000
CallCount = Annotated[int, Field(ge=0, le=MAX_CALLS, strict=True)]
