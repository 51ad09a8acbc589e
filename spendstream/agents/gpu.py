"""Self-hosted GPUs in the pipeline: the deployments file, sample validation, and two detectors.

The deployments file (``SPENDSTREAM_DEPLOYMENTS_FILE``) says what each self-hosted
deployment costs::

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

The detectors are pure: they see samples in time order per deployment and
return alerts (firing once at onset, resolved when the condition ends).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from spendstream.configfile import load_model
from spendstream.schemas.alert import Alert
from spendstream.schemas.gpu import GpuSample


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


def _tokens_per_s(sample: GpuSample) -> float | None:
    rates = [r for r in (sample.prompt_tokens_per_s, sample.generation_tokens_per_s) if r is not None]
    return sum(rates) if rates else None


@dataclass
class _Episode:
    since: datetime
    firing: bool = False


class IdleGpuDetector:
    """GPUs costing money with throughput under the deployment's threshold for N minutes.

    A sample whose token rate could not be read neither starts nor ends an idle
    episode: unreadable is not idle.
    """

    def __init__(self, deployments: dict[str, Deployment]) -> None:
        self._deployments = deployments
        self._episodes: dict[str, _Episode] = {}

    def observe(self, sample: GpuSample, now: datetime) -> list[Alert]:
        deployment = self._deployments.get(sample.deployment)
        rate = _tokens_per_s(sample)
        if deployment is None or rate is None:
            return []
        start = sample.ts - timedelta(seconds=sample.interval_s)
        episode = self._episodes.get(sample.deployment)
        if rate >= deployment.idle_below_tokens_per_s:
            if episode is None:
                return []
            del self._episodes[sample.deployment]
            if not episode.firing:
                return []
            # traffic came back during this interval: the idle time ended where it began
            return [self._alert(deployment, episode, start, rate, "resolved", now)]
        if episode is None:
            episode = self._episodes[sample.deployment] = _Episode(start)
        if not episode.firing and sample.ts - episode.since >= timedelta(minutes=deployment.idle_after_minutes):
            episode.firing = True
            return [self._alert(deployment, episode, sample.ts, rate, "firing", now)]
        return []

    @staticmethod
    def _alert(d: Deployment, episode: _Episode, end: datetime, rate: float, state: str, now: datetime) -> Alert:
        seconds = Decimal(str(round((end - episode.since).total_seconds(), 3)))
        cost = d.usd_per_hour * seconds / 3600
        what = (f"idle for {seconds / 60:.1f} min at {rate:.2f} tokens/s" if state == "firing"
                else f"was idle for {seconds / 60:.1f} min; traffic is back at {rate:.2f} tokens/s")
        return Alert(
            kind="idle_gpu", severity="warning", state=state, subject=f"deployment={d.name}",
            window_start=episode.since, window_end=end, observed=Decimal(str(round(rate, 6))),
            expected=Decimal(str(d.idle_below_tokens_per_s)),
            dedup_key=f"idle_gpu:{d.name}:{episode.since.isoformat()}",
            message=(f"{d.name} ({d.gpu_count}× {d.gpu_type}, ${d.usd_per_hour}/h) {what} "
                     f"(threshold {d.idle_below_tokens_per_s}); ${cost:.2f} of GPU time idle"),
            created_at=now)


class KvSaturationDetector:
    """KV cache near full (≥ 95 %) with requests waiting, for N minutes; resolves below 90 % or an empty queue."""

    FIRE_AT, CLEAR_BELOW = 0.95, 0.90

    def __init__(self, deployments: dict[str, Deployment]) -> None:
        self._deployments = deployments
        self._episodes: dict[str, _Episode] = {}

    def observe(self, sample: GpuSample, now: datetime) -> list[Alert]:
        deployment = self._deployments.get(sample.deployment)
        kv, waiting = sample.kv_cache_utilization, sample.waiting_requests
        if deployment is None or kv is None or waiting is None:
            return []
        episode = self._episodes.get(sample.deployment)
        if kv < self.CLEAR_BELOW or waiting == 0 or (episode is None and kv < self.FIRE_AT):
            if episode is not None:
                del self._episodes[sample.deployment]
                if episode.firing:
                    return [self._alert(deployment, episode, sample, "resolved", now)]
            return []
        if episode is None:
            episode = self._episodes[sample.deployment] = _Episode(sample.ts - timedelta(seconds=sample.interval_s))
        if not episode.firing and sample.ts - episode.since >= timedelta(minutes=deployment.saturated_after_minutes):
            episode.firing = True
            return [self._alert(deployment, episode, sample, "firing", now)]
        return []

    @staticmethod
    def _alert(d: Deployment, episode: _Episode, sample: GpuSample, state: str, now: datetime) -> Alert:
        return Alert(
            kind="kv_cache_saturation", severity="warning", state=state, subject=f"deployment={d.name}",
            window_start=episode.since, window_end=sample.ts,
            observed=Decimal(str(round(sample.kv_cache_utilization or 0, 4))), expected=Decimal("0.95"),
            dedup_key=f"kv_cache_saturation:{d.name}:{episode.since.isoformat()}",
            message=(f"{d.name}: KV cache {100 * (sample.kv_cache_utilization or 0):.0f}% full with "
                     f"{sample.waiting_requests:.0f} requests waiting since {episode.since:%H:%M} UTC; "
                     "add capacity or cap context length"),
            created_at=now)
