"""The local overrides file: negotiated, fine-tuned, private and self-hosted prices.

A YAML (or JSON) file, path from ``SPENDSTREAM_OVERRIDES_FILE``::

    overrides:
      - id: acme-enterprise-2026        # stored on every row it prices
        provider: openai                # provider name or alias; "*" for any
        model: "gpt-4o*"                # glob on the model (as sent, normalised, or the catalog id)
        customer: acme                  # optional: only this customer's calls (or team:)
        effective_from: 2026-01-01      # inclusive; a date (UTC midnight) or a datetime with zone
        effective_to: 2027-01-01        # exclusive; optional
        discount_percent: 15            # off the catalog price…
      - id: llama-self-hosted
        provider: self-hosted
        model: acme-llama-70b
        effective_from: 2026-01-01
        prices:                         # …or explicit USD per million tokens
          input: 0.20
          output: 0.60                  # cached_input, cache_write, cache_write_1h, reasoning optional

Optional ``mode`` (realtime/batch) and ``service_tier`` narrow a rule further. The
**last** matching rule in the file wins, so write general rules first and
specific ones after. Overrides win over the catalog. The file is validated when
it is loaded; every error names the file, the line and the field.
"""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from spendstream.configfile import ConfigFileError, load_model
from spendstream.pricing.normalize import PROVIDER_ALIASES

# Unit prices are kept to a millionth of a dollar per million tokens (1e-12 USD a
# token): finer digits would be a typo, and the vectorised arithmetic is exact at it.
PRICE_DECIMALS = 6


class OverridesError(ConfigFileError):
    """The overrides file is unusable; the message names file, line and field."""


class TokenPrices(BaseModel):
    """USD per million tokens. Unset cache and reasoning rates fall back as the catalog's do."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)
    cached_input: Decimal | None = Field(default=None, ge=0)
    cache_write: Decimal | None = Field(default=None, ge=0)
    cache_write_1h: Decimal | None = Field(default=None, ge=0)
    reasoning: Decimal | None = Field(default=None, ge=0)

    @field_validator("*")
    @classmethod
    def _precision(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and value.as_tuple().exponent < -PRICE_DECIMALS:  # type: ignore[operator]
            raise ValueError(f"at most {PRICE_DECIMALS} decimal places (USD per million tokens)")
        return value


class Override(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=128)
    provider: str = Field(default="*", min_length=1)
    model: str = Field(min_length=1, description="glob, matched case-insensitively")
    team: str | None = None
    customer: str | None = None
    mode: Literal["realtime", "batch"] | None = None
    service_tier: str | None = None
    effective_from: datetime
    effective_to: datetime | None = None
    discount_percent: Decimal | None = Field(default=None, gt=0, le=100)
    prices: TokenPrices | None = None
    note: str | None = None

    @field_validator("effective_from", "effective_to", mode="before")
    @classmethod
    def _instant(cls, value: Any) -> Any:
        if isinstance(value, str):  # JSON has no dates: ISO text, a date or a datetime with zone
            try:
                value = date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
            except ValueError as exc:
                raise ValueError(f"not an ISO date or datetime: {value!r}") from exc
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise ValueError("a datetime needs a time zone, e.g. 2026-01-01T00:00:00Z")
            if value.second or value.microsecond:
                raise ValueError("must fall on a whole minute (prices are resolved per minute)")
            return value.astimezone(timezone.utc)
        if isinstance(value, date):
            return datetime.combine(value, time(0), timezone.utc)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Override:
        if (self.discount_percent is None) == (self.prices is None):
            raise ValueError("give exactly one of discount_percent or prices")
        if self.effective_to is not None and self.effective_to <= self.effective_from:
            raise ValueError("effective_to must be after effective_from")
        if self.discount_percent is not None and self.discount_percent.as_tuple().exponent < -4:  # type: ignore[operator]
            raise ValueError("discount_percent: at most 4 decimal places")
        return self

    @property
    def provider_id(self) -> str:
        name = self.provider.lower()
        return PROVIDER_ALIASES.get(name, name)

    def in_force(self, at: datetime) -> bool:
        return self.effective_from <= at and (self.effective_to is None or at < self.effective_to)

    def matches(self, *, provider: str, provider_id: str | None, models: tuple[str, ...], team: str | None,
                customer: str | None, mode: str, service_tier: str | None) -> bool:
        if self.provider != "*" and self.provider_id not in (provider.lower(), provider_id):
            return False
        if not any(fnmatch.fnmatchcase(model, self.model.lower()) for model in models):
            return False
        return ((self.team is None or self.team == team)
                and (self.customer is None or self.customer == customer)
                and (self.mode is None or self.mode == mode)
                and (self.service_tier is None or self.service_tier == service_tier))


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    overrides: list[Override] = Field(default_factory=list)

    @field_validator("overrides")
    @classmethod
    def _unique_ids(cls, overrides: list[Override]) -> list[Override]:
        seen: set[str] = set()
        for override in overrides:
            if override.id in seen:
                raise ValueError(f"duplicate override id {override.id!r}")
            seen.add(override.id)
        return overrides


@dataclass(frozen=True)
class OverrideSet:
    """The rules of one overrides file and the version stamped on the rows they price."""

    rules: tuple[Override, ...] = ()
    version: str | None = None
    path: str | None = None

    def find(self, at: datetime, **context: Any) -> Override | None:
        """The rule that applies at ``at`` to a call described by ``context`` (last match wins)."""
        for rule in reversed(self.rules):
            if rule.in_force(at) and rule.matches(**context):
                return rule
        return None


def load_overrides(path: str | Path | None) -> OverrideSet:
    """Load and validate an overrides file; an empty set when ``path`` is None."""
    if path is None:
        return OverrideSet()
    path = Path(path)
    try:
        parsed, text = load_model(path, _File, "overrides file")
    except ConfigFileError as exc:
        raise OverridesError(str(exc)) from exc
    rules = tuple(parsed.overrides) if parsed else ()
    return OverrideSet(rules, "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:12], str(path))
