"""The resale price book: what customers pay, beside what their calls cost.

A YAML (or JSON) file, loaded into ClickHouse with ``spendstream pricebook load FILE``::

    customers:                          # optional: each customer's plan and Stripe id
      acme: {plan: enterprise, stripe_customer_id: cus_NciAYcXfLnqBoz}
    prices:
      - id: list-plus-30                # everyone: 30 % on the billed cost
        markup_percent: 30
        effective_from: 2026-01-01      # a date (UTC midnight) or a whole UTC hour; inclusive
      - id: enterprise-plan
        plan: enterprise                # or customer: acme (not both); neither: everyone
        markup_percent: 15
        effective_from: 2026-01-01
      - id: acme-gpt-4o
        customer: acme
        provider: openai                # glob on the provider as sent; default "*"
        model: "gpt-4o*"                # glob on the model as sent; default "*"
        sell: {input: 3.00, cached_input: 1.50, output: 12.00, per_request: 0.001}
        effective_from: 2026-06-01
        effective_to: 2027-01-01        # exclusive; optional
    stripe:                             # what `spendstream export stripe` writes
      meters:
        - {event_name: ai_spend, value: revenue_cents}
        - {event_name: ai_tokens, value: tokens}

A rule sells either at a ``markup_percent`` on the event's billed cost
(``usage_events.billed_cost``: SPENDSTREAM_BILLING_POLICY decides which cost that is), or
at explicit ``sell`` prices: USD per million tokens (``cached_input`` defaults to
``input``) plus ``per_request`` per successful attempt. As in the overrides file, the
**last** rule in force that matches wins. Every mistake is reported as ``file:line: field:
what``, all at once.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from spendstream.configfile import ConfigFileError, load_model

# As the overrides: a millionth of a dollar per million tokens is the finest price that is not a typo.
PRICE_DECIMALS = 6
METER_VALUES = ("revenue_cents", "tokens", "input_tokens", "output_tokens", "requests")


class PriceBookError(ConfigFileError):
    """The price book is unusable; the message names file, line and field."""


class SellPrices(BaseModel):
    """USD per million tokens, and per successful request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: Decimal = Field(ge=0, decimal_places=PRICE_DECIMALS)
    output: Decimal = Field(ge=0, decimal_places=PRICE_DECIMALS)
    cached_input: Decimal | None = Field(default=None, ge=0, decimal_places=PRICE_DECIMALS)
    per_request: Decimal = Field(default=Decimal(0), ge=0, decimal_places=PRICE_DECIMALS)


class Customer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    plan: str | None = Field(default=None, min_length=1, max_length=128)
    stripe_customer_id: str | None = Field(default=None, pattern=r"^cus_[A-Za-z0-9]+$")


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=128)
    customer: str | None = Field(default=None, min_length=1)
    plan: str | None = Field(default=None, min_length=1)
    provider: str = Field(default="*", min_length=1)
    model: str = Field(default="*", min_length=1)
    effective_from: datetime | date
    effective_to: datetime | date | None = None
    markup_percent: Decimal | None = Field(default=None, ge=-100, le=10_000, decimal_places=4)
    sell: SellPrices | None = None

    @field_validator("effective_from", "effective_to")
    @classmethod
    def _whole_hour(cls, value: datetime | date | None) -> datetime | None:
        if value is None:
            return None
        at = value if isinstance(value, datetime) else datetime.combine(value, time(0), timezone.utc)
        if at.tzinfo is None:
            raise ValueError("a datetime needs a zone (e.g. 2026-06-01T00:00:00Z)")
        at = at.astimezone(timezone.utc)
        if at.minute or at.second or at.microsecond:
            raise ValueError("must be a date or a whole UTC hour: margins are kept per hour")
        return at

    @model_validator(mode="after")
    def _one_price_one_scope(self) -> Rule:
        if (self.markup_percent is None) == (self.sell is None):
            raise ValueError("give exactly one of markup_percent and sell")
        if self.customer is not None and self.plan is not None:
            raise ValueError("give customer or plan, not both")
        if self.effective_to is not None and self.effective_to <= self.effective_from:
            raise ValueError("effective_to must be after effective_from")
        return self


class Meter(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_name: str = Field(min_length=1, max_length=100)
    value: Literal["revenue_cents", "tokens", "input_tokens", "output_tokens", "requests"]


class StripeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    meters: list[Meter] = Field(min_length=1)


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    customers: dict[str, Customer] = Field(default_factory=dict)
    prices: list[Rule] = Field(default_factory=list)
    stripe: StripeConfig | None = None


@dataclass(frozen=True)
class PriceBook:
    customers: dict[str, Customer]
    rules: tuple[Rule, ...]
    stripe: StripeConfig | None
    version: str  # sha256 of the file's text: what the tables and the export name it by
    path: str | None = None


def load_pricebook(path: str | Path) -> PriceBook:
    """Read and validate a price book; :class:`PriceBookError` names the file, line and field of every mistake."""
    path = Path(path)
    try:
        parsed, text = load_model(path, _File, "price book")
    except ConfigFileError as exc:
        raise PriceBookError(str(exc)) from exc
    parsed = parsed or _File()
    return PriceBook(dict(parsed.customers), tuple(parsed.prices), parsed.stripe,
                     "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:12], str(path))


def glob_regex(glob: str) -> str:
    """A glob (``*``, ``?``) as an anchored RE2 pattern for ClickHouse's ``match``."""
    return "^" + "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob) + "$"
