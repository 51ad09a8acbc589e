"""Field types shared by the contracts."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

# Counts are strict: "12" or 12.5 or true in a token field is a bug in the
# emitting service, and a meter must not guess what was meant.
TokenCount = Annotated[int, Field(ge=0, strict=True)]
OptionalCount = Annotated[int | None, Field(default=None, ge=0, strict=True)]
Label = Annotated[str | None, Field(default=None, min_length=1, max_length=256)]
Identifier = Annotated[str, Field(min_length=1, max_length=128)]
