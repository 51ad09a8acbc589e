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
          tiers:                        # optional: context-length tiers, as the catalog's
            - above_input_tokens: 200000  # a call with more input tokens pays these on all its tokens
              input: 0.40
              output: 1.20              # a rate a tier leaves out stays as below it
      - id: openai-code-interpreter
        provider: openai
        model: "*"
        effective_from: 2025-03-11
        fees_per_call:                  # USD per call: web_search, web_fetch, file_search,
          code_execution: 0.03          # code_execution, request
      - id: vertex-regional-claude      # Vertex AI: regional endpoints cost 10 % more than global
        provider: vertex_ai
        model: "claude-*"
        region: "*-*"                   # region and inference_profile: globs on the event's
        effective_from: 2025-10-01      # (inference_profile: null matches events that give none)
        premium_percent: 10             # on top of whatever price applies, fees included
      - id: night-discount
        provider: deepseek
        model: "*"
        hours: {start: "16:30", end: "00:30", time_zone: UTC}   # [start, end), may wrap midnight
        effective_from: 2025-02-26
        discount_percent: 50

Optional ``mode`` (realtime/batch), ``service_tier``, ``team``, ``customer``,
``region`` and ``inference_profile`` narrow a rule further. Rules combine in
layers, the **last** matching rule of each layer winning: the token prices (a
rule with ``prices`` or ``discount_percent``), each fee kind (``fees_per_call``),
and the premium (``premium_percent``, applied last). So write general rules first
and specific ones after. Overrides win over the catalog. The file is validated
when it is loaded; every error names the file, the line and the field.
"""

from __future__ import annotations

import fnmatch
import hashlib
from dataclasses import dataclass
from datetime import datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from spendstream.configfile import ConfigFileError, known_zone, load_model, utc_instant
from spendstream.pricing.normalize import PROVIDER_ALIASES

# Unit prices are kept to a millionth of a dollar per million tokens (1e-12 USD a
# token): finer digits would be a typo, and the vectorised arithmetic is exact at it.
PRICE_DECIMALS = 6
# Fees are kept to 1e-12 USD a call, as the vectorised arithmetic holds them.
FEE_DECIMALS = 12
_UNSET_PROFILE = "\x00unset"  # an inference_profile rule of null: "the event gives none"


def _at_most(value: Decimal | None, decimals: int, unit: str) -> Decimal | None:
    if value is not None and value.as_tuple().exponent < -decimals:  # type: ignore[operator]
        raise ValueError(f"at most {decimals} decimal places ({unit})")
    return value


class OverridesError(ConfigFileError):
    """The overrides file is unusable; the message names file, line and field."""


class TierPrices(BaseModel):
    """The rates of a call with more than ``above_input_tokens`` input tokens; unset ones stay as below."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    above_input_tokens: int = Field(gt=0, strict=True)
    input: Decimal | None = Field(default=None, ge=0)
    output: Decimal | None = Field(default=None, ge=0)
    cached_input: Decimal | None = Field(default=None, ge=0)
    cache_write: Decimal | None = Field(default=None, ge=0)
    cache_write_1h: Decimal | None = Field(default=None, ge=0)
    reasoning: Decimal | None = Field(default=None, ge=0)

    @field_validator("input", "output", "cached_input", "cache_write", "cache_write_1h", "reasoning")
    @classmethod
    def _precision(cls, value: Decimal | None) -> Decimal | None:
        return _at_most(value, PRICE_DECIMALS, "USD per million tokens")


class TokenPrices(BaseModel):
    """USD per million tokens. Unset cache and reasoning rates fall back as the catalog's do."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)
    cached_input: Decimal | None = Field(default=None, ge=0)
    cache_write: Decimal | None = Field(default=None, ge=0)
    cache_write_1h: Decimal | None = Field(default=None, ge=0)
    reasoning: Decimal | None = Field(default=None, ge=0)
    tiers: list[TierPrices] = Field(default_factory=list, max_length=16)

    @field_validator("input", "output", "cached_input", "cache_write", "cache_write_1h", "reasoning")
    @classmethod
    def _precision(cls, value: Decimal | None) -> Decimal | None:
        return _at_most(value, PRICE_DECIMALS, "USD per million tokens")

    @field_validator("tiers")
    @classmethod
    def _ascending(cls, tiers: list[TierPrices]) -> list[TierPrices]:
        starts = [tier.above_input_tokens for tier in tiers]
        if starts != sorted(set(starts)):
            raise ValueError(f"tiers must be in strictly ascending order of above_input_tokens, not {starts}")
        return tiers


class FeePrices(BaseModel):
    """USD per call of each non-token charge (spendstream.pricing.fees); unset kinds keep the catalog's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    web_search: Decimal | None = Field(default=None, ge=0, le=10)
    web_fetch: Decimal | None = Field(default=None, ge=0, le=10)
    file_search: Decimal | None = Field(default=None, ge=0, le=10)
    code_execution: Decimal | None = Field(default=None, ge=0, le=10)
    request: Decimal | None = Field(default=None, ge=0, le=10)

    @field_validator("*")
    @classmethod
    def _precision(cls, value: Decimal | None) -> Decimal | None:
        return _at_most(value, FEE_DECIMALS, "USD per call")

    @model_validator(mode="after")
    def _some(self) -> FeePrices:
        if all(value is None for value in vars(self).values()):
            raise ValueError("name at least one fee: web_search, web_fetch, file_search, code_execution, request")
        return self


class Hours(BaseModel):
    """A daily window ``[start, end)`` in ``time_zone``; it wraps past midnight when end <= start."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: time
    end: time
    time_zone: str = "UTC"

    @field_validator("start", "end", mode="before")
    @classmethod
    def _clock(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):  # YAML reads 16:30 as 990 (base 60)
            value = f"{value // 60:02d}:{value % 60:02d}"
        if isinstance(value, str):
            try:
                parsed = time.fromisoformat(value)
            except ValueError as exc:
                raise ValueError(f"not a time of day HH:MM: {value!r}") from exc
            if parsed.second or parsed.microsecond or parsed.tzinfo:
                raise ValueError("a time of day is HH:MM, on a whole minute, its zone in time_zone")
            return parsed
        return value

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return known_zone(value, example=" (an IANA name such as UTC or Asia/Shanghai)")

    def contains(self, at: datetime) -> bool:
        local = at.astimezone(ZoneInfo(self.time_zone)).time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


class Override(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=128)
    provider: str = Field(default="*", min_length=1)
    model: str = Field(min_length=1, description="glob, matched case-insensitively")
    team: str | None = None
    customer: str | None = None
    mode: Literal["realtime", "batch"] | None = None
    service_tier: str | None = None
    region: str | None = Field(default=None, description="glob on the event's region")
    inference_profile: str | None = Field(default=_UNSET_PROFILE, description=(
        "glob on the event's inference profile; null matches events that give none"))
    hours: Hours | None = None
    effective_from: datetime
    effective_to: datetime | None = None
    discount_percent: Decimal | None = Field(default=None, gt=0, le=100)
    prices: TokenPrices | None = None
    fees_per_call: FeePrices | None = None
    premium_percent: Decimal | None = Field(default=None, gt=0, le=1000, description=(
        "a surcharge on the price that applies, fees included (e.g. a regional endpoint's +10 %)"))
    note: str | None = None

    @field_validator("effective_from", "effective_to", mode="before")
    @classmethod
    def _instant(cls, value: Any) -> Any:
        value = utc_instant(value)
        if isinstance(value, datetime) and (value.second or value.microsecond):
            raise ValueError("must fall on a whole minute (prices are resolved per minute)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Override:
        if self.discount_percent is not None and self.prices is not None:
            raise ValueError("give exactly one of discount_percent or prices")
        if self.discount_percent is self.prices is self.fees_per_call is self.premium_percent is None:
            raise ValueError("give exactly one of discount_percent or prices, or fees_per_call or premium_percent")
        if self.discount_percent is not None and self.premium_percent is not None:
            raise ValueError("a discount and a premium in one rule: write two rules")
        if self.effective_to is not None and self.effective_to <= self.effective_from:
            raise ValueError("effective_to must be after effective_from")
        for name in ("discount_percent", "premium_percent"):
            value = getattr(self, name)
            if value is not None and value.as_tuple().exponent < -4:  # type: ignore[operator]
                raise ValueError(f"{name}: at most 4 decimal places")
        return self

    @property
    def names_place(self) -> bool:
        """Whether the rule depends on where the call was served."""
        return self.region is not None or self.inference_profile != _UNSET_PROFILE

    @property
    def provider_id(self) -> str:
        name = self.provider.lower()
        return PROVIDER_ALIASES.get(name, name)

    def in_force(self, at: datetime) -> bool:
        return (self.effective_from <= at and (self.effective_to is None or at < self.effective_to)
                and (self.hours is None or self.hours.contains(at)))

    def matches(self, *, provider: str, provider_id: str | None, models: tuple[str, ...], team: str | None,
                customer: str | None, mode: str, service_tier: str | None, region: str | None = None,
                inference_profile: str | None = None) -> bool:
        if self.provider != "*" and self.provider_id not in (provider.lower(), provider_id):
            return False
        if not any(fnmatch.fnmatchcase(model, self.model.lower()) for model in models):
            return False
        return ((self.team is None or self.team == team)
                and (self.customer is None or self.customer == customer)
                and (self.mode is None or self.mode == mode)
                and (self.service_tier is None or self.service_tier == service_tier)
                and (self.region is None or (region is not None
                                             and fnmatch.fnmatchcase(region.lower(), self.region.lower())))
                and _profile_matches(self.inference_profile, inference_profile))


def _profile_matches(rule: str | None, profile: str | None) -> bool:
    if rule == _UNSET_PROFILE:
        return True
    if rule is None or profile is None:
        return rule is None and profile is None
    return fnmatch.fnmatchcase(profile.lower(), rule.lower())


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
        """The last rule in force at ``at`` matching a call described by ``context``."""
        found = self.matching(at, **context)
        return found[-1] if found else None

    def matching(self, at: datetime, **context: Any) -> list[Override]:
        """Every rule in force at ``at`` matching a call described by ``context``, in file order."""
        return [rule for rule in self.rules if rule.in_force(at) and rule.matches(**context)]

    @property
    def names_place(self) -> bool:
        """Whether any rule depends on the region or inference profile (they then split price groups)."""
        return any(rule.names_place for rule in self.rules)


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
