"""What a self-hosted deployment costs: the deployments file (``SPENDSTREAM_DEPLOYMENTS_FILE``)::

    deployments:
      - name: llama-70b-prod          # what usage events and the exporter call it
        gpu_type: H100-80GB
        gpu_count: 8
        usd_per_gpu_hour: 2.49        # on-demand, reserved or spot: what you pay
        pricing: on-demand
        idle_below_tokens_per_s: 5    # optional (default 1): "idle" threshold
        idle_after_minutes: 10        # optional (default 10)

GPU cost accrues for the time the exporter observed the deployment (the sum of
its samples' intervals) at ``gpu_count × usd_per_gpu_hour``; the SQL views in
migration 4 turn it into $/1M tokens, idle cost and a per-team allocation.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from spendstream.configfile import load_model


class Deployment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128)
    gpu_type: str = Field(min_length=1)
    gpu_count: int = Field(ge=1)
    usd_per_gpu_hour: Decimal = Field(ge=0)
    pricing: Literal["on-demand", "reserved", "spot"] = "on-demand"
    idle_below_tokens_per_s: float = Field(default=1.0, ge=0)
    idle_after_minutes: float = Field(default=10.0, gt=0)
    saturated_after_minutes: float = Field(default=5.0, gt=0)

    @property
    def usd_per_hour(self) -> Decimal:
        return self.usd_per_gpu_hour * self.gpu_count


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
