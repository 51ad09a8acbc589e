"""CostRecord: a UsageEvent plus the price that applied to it."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from spendstream.schemas.usage import UsageEvent


class CostRecord(BaseModel):
    """A priced (or flagged unpriced) usage event.

    Money is ``Decimal`` end to end. An event whose model has no price has
    ``priced = False``, ``unpriced_reason`` set and every cost ``None``: it is never
    priced as 0.
    """

    model_config = ConfigDict(frozen=True, title="CostRecord")

    event: UsageEvent
    priced: bool
    unpriced_reason: str | None = None
    catalog: str = Field(description="The price catalog, e.g. genai-prices.")
    catalog_version: str
    overrides_version: str | None = Field(default=None, description="Hash of the overrides file in use, if any.")
    price_source: str | None = Field(default=None, description=(
        "catalog, catalog:<variant> (batch, flex…), rule:batch-50% or override:<id>."))
    override_id: str | None = Field(default=None, description="The override rule that applied, if any.")
    price_model_id: str | None = Field(default=None, description="The catalog entry the model resolved to.")
    price_provider_id: str | None = None
    priced_at_ts: datetime = Field(description="The instant whose prices applied (the event's ts).")

    input_price_per_mtok: Decimal | None = None
    cached_input_price_per_mtok: Decimal | None = None
    cache_write_price_per_mtok: Decimal | None = None
    cache_write_1h_price_per_mtok: Decimal | None = None
    output_price_per_mtok: Decimal | None = None
    reasoning_price_per_mtok: Decimal | None = None

    web_search_price_per_call: Decimal | None = None
    web_fetch_price_per_call: Decimal | None = None
    file_search_price_per_call: Decimal | None = None
    code_execution_price_per_call: Decimal | None = None
    request_price_per_call: Decimal | None = None

    input_cost: Decimal | None = Field(default=None,
                                       description="Every input-side token: uncached, cached, cache write.")
    output_cost: Decimal | None = Field(default=None, description="Every output-side token, reasoning included.")
    fee_cost: Decimal | None = Field(default=None, description=(
        "Non-token charges: server-side tool calls (web search, file search, code execution, web fetch) "
        "and per-request fees."))
    total_cost: Decimal | None = Field(default=None, description="input_cost + output_cost + fee_cost.")
    list_cost: Decimal | None = Field(default=None, description=(
        "What the catalog's list price would have charged (FOCUS ListCost); total_cost is the effective cost."))
