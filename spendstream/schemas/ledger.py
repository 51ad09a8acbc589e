"""LedgerEntry v1: what one emitter delivered to Kafka for one source and minute (cumulative)."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class LedgerEntry(BaseModel):
    """The emitter's running count of distinct events it handed to Kafka for ``service`` in ``minute``.

    Counts are cumulative per emitter: the latest report of each ``emitter_id`` is the truth.
    ``exact`` is false once the emitter stopped remembering ids for the minute (a re-send
    could then have counted twice).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", title="LedgerEntry")

    schema_version: Literal[1] = 1
    emitter_id: str = Field(min_length=1, max_length=256)
    service: str = Field(default="", max_length=256)
    minute: AwareDatetime
    events: int = Field(ge=0, strict=True)
    exact: bool = True
    reported_at: AwareDatetime


LEDGER_WIRE_REQUIRED = ("emitter_id", "minute", "events", "reported_at")
