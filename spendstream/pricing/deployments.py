"""What a self-hosted deployment costs: the deployments file (``SPENDSTREAM_DEPLOYMENTS_FILE``)::

    deployments:
      - name: llama-70b-prod          # what usage events and the exporter call it
        gpu_type: H100-80GB
        gpu_count: 8
        usd_per_gpu_hour: 2.49        # one price, in force for all time …
        pricing: on-demand            # on-demand, reserved or spot: what you pay
        idle_below_tokens_per_s: 5    # optional (default 1): "idle" threshold
        idle_after_minutes: 10        # optional (default 10)
        prefill_cost_multiplier: 4    # optional: GPU time per prompt token vs per output token,
                                      # where the engine reports no prefill/decode time

      - name: qwen-7b
        gpu_type: L4
        gpu_count: 2
        prices:                       # … or effective-dated prices: each in force from its
          - effective_from: 2026-01-01          # date (UTC midnight) or datetime with zone
            usd_per_gpu_hour: 0.80
          - effective_from: 2026-07-01
            usd_per_gpu_hour: 0.55
            pricing: reserved         # optional per period: pricing and gpu_count
            gpu_count: 4

GPU cost accrues for the time the exporter observed the deployment (the sum of
its samples' intervals) at ``gpu_count × usd_per_gpu_hour`` of the period in
force at each sample's time. Adding a period changes nothing before it: a price
change does not rewrite the past. Correcting a past price is ``spendstream
gpu-reprice``, which records the correction (:mod:`spendstream.sinks.gpu_prices`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from spendstream.configfile import load_model, utc_instant

Pricing = Literal["on-demand", "reserved", "spot"]
# An undated price is in force from the beginning of time, stored as the epoch.
ALWAYS = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Prefill costs more GPU time per token than decode on most engines, but by how much
# depends on model, batch and context; 1 (no split) unless the operator says or the
# engine reports prefill and decode time.
DEFAULT_PREFILL_COST_MULTIPLIER = Decimal(1)


class GpuPrice(BaseModel):
    """One price period; ``gpu_count``/``pricing`` None means the deployment's own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    effective_from: datetime
    usd_per_gpu_hour: Decimal = Field(ge=0)
    gpu_count: int | None = Field(default=None, ge=1)
    pricing: Pricing | None = None

    @field_validator("effective_from", mode="before")
    @classmethod
    def _instant(cls, value: Any) -> Any:
        return utc_instant(value)


class PricePeriod(BaseModel):
    """A price period with every field resolved: what the store keeps."""

    model_config = ConfigDict(frozen=True)

    effective_from: datetime
    usd_per_gpu_hour: Decimal
    gpu_count: int
    pricing: Pricing

    @property
    def usd_per_hour(self) -> Decimal:
        return self.usd_per_gpu_hour * self.gpu_count


class Deployment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128)
    gpu_type: str = Field(min_length=1)
    gpu_count: int = Field(ge=1)
    usd_per_gpu_hour: Decimal | None = Field(default=None, ge=0)
    prices: tuple[GpuPrice, ...] = ()
    pricing: Pricing = "on-demand"
    idle_below_tokens_per_s: float = Field(default=1.0, ge=0)
    idle_after_minutes: float = Field(default=10.0, gt=0)
    saturated_after_minutes: float = Field(default=5.0, gt=0)
    prefill_cost_multiplier: Decimal = Field(default=DEFAULT_PREFILL_COST_MULTIPLIER, gt=0)

    @model_validator(mode="after")
    def _one_price(self) -> Deployment:
        if (self.usd_per_gpu_hour is None) == (not self.prices):
            raise ValueError("give exactly one of usd_per_gpu_hour or prices")
        starts = [p.effective_from for p in self.prices]
        if len(set(starts)) != len(starts):
            raise ValueError("two prices with the same effective_from")
        return self

    @property
    def periods(self) -> list[PricePeriod]:
        """The price periods, oldest first; an undated price is one period from :data:`ALWAYS`."""
        if self.usd_per_gpu_hour is not None:
            return [PricePeriod(effective_from=ALWAYS, usd_per_gpu_hour=self.usd_per_gpu_hour,
                                gpu_count=self.gpu_count, pricing=self.pricing)]
        return [PricePeriod(effective_from=p.effective_from, usd_per_gpu_hour=p.usd_per_gpu_hour,
                            gpu_count=p.gpu_count or self.gpu_count, pricing=p.pricing or self.pricing)
                for p in sorted(self.prices, key=lambda p: p.effective_from)]

    def price_at(self, at: datetime) -> PricePeriod | None:
        """The period in force at ``at``; None before the first one (unpriced, never 0)."""
        in_force = [p for p in self.periods if p.effective_from <= at]
        return in_force[-1] if in_force else None

    @property
    def usd_per_hour(self) -> Decimal:
        """The latest period's ``gpu_count × usd_per_gpu_hour``."""
        return self.periods[-1].usd_per_hour


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    deployments: list[Deployment] = Field(default_factory=list)

    @field_validator("deployments")
    @classmethod
    def _unique(cls, deployments: list[Deployment]) -> list[Deployment]:
        names = [d.name for d in deployments]
        if duplicates := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"duplicate deployment name(s): {', '.join(duplicates)}")
        return deployments


def load_deployments(path: str | Path | None) -> dict[str, Deployment]:
    """Deployments by name; empty when ``path`` is None. Errors name file, line and field."""
    if path is None:
        return {}
    parsed, _ = load_model(Path(path), _File, "deployments file")
    return {d.name: d for d in (parsed.deployments if parsed else [])}
