"""GPU detectors: idle GPUs that cost money, and saturated KV caches.

Pure: they see a deployment's samples in time order and return alerts (firing
once at onset, resolved when the condition ends). The worker's GPU loop feeds
them; the deployments file (pricing/deployments.py) says what each deployment
costs and its thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from spendstream.pricing.deployments import Deployment
from spendstream.schemas.alert import Alert
from spendstream.schemas.gpu import GpuSample


def _tokens_per_s(sample: GpuSample) -> float | None:
    rates = [r for r in (sample.prompt_tokens_per_s, sample.generation_tokens_per_s) if r is not None]
    return sum(rates) if rates else None


def _fullest(sample: GpuSample) -> float | None:
    if sample.kv_cache_utilization_max is not None:
        return sample.kv_cache_utilization_max
    return sample.kv_cache_utilization


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
        price = d.price_at(episode.since) or d.price_at(end)  # the price in force then, not today's
        usd_per_hour = price.usd_per_hour if price else None
        what = (f"idle for {seconds / 60:.1f} min at {rate:.2f} tokens/s" if state == "firing"
                else f"was idle for {seconds / 60:.1f} min; traffic is back at {rate:.2f} tokens/s")
        cost = (f"${usd_per_hour * seconds / 3600:.2f} of GPU time idle" if usd_per_hour is not None
                else "GPU time idle (no price in force then)")
        return Alert(
            kind="idle_gpu", severity="warning", state=state, subject=f"deployment={d.name}",
            window_start=episode.since, window_end=end, observed=Decimal(str(round(rate, 6))),
            expected=Decimal(str(d.idle_below_tokens_per_s)),
            dedup_key=f"idle_gpu:{d.name}:{episode.since.isoformat()}",
            message=(f"{d.name} ({price.gpu_count if price else d.gpu_count}× {d.gpu_type}, "
                     f"${usd_per_hour if usd_per_hour is not None else '?'}/h) {what} "
                     f"(threshold {d.idle_below_tokens_per_s}); {cost}"),
            created_at=now)


class KvSaturationDetector:
    """KV cache near full (≥ 95 %) with requests waiting, for N minutes; resolves below 90 % or an empty queue.

    It watches the fullest engine (``kv_cache_utilization_max``), falling back to the
    mean for samples that do not carry it: engines at 0.9 and 0.1 average 0.5 exactly
    when a data-parallel queue piles up on one of them.
    """

    FIRE_AT, CLEAR_BELOW = 0.95, 0.90

    def __init__(self, deployments: dict[str, Deployment]) -> None:
        self._deployments = deployments
        self._episodes: dict[str, _Episode] = {}

    def observe(self, sample: GpuSample, now: datetime) -> list[Alert]:
        deployment = self._deployments.get(sample.deployment)
        kv, waiting = _fullest(sample), sample.waiting_requests
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
            observed=Decimal(str(round(_fullest(sample) or 0, 4))), expected=Decimal("0.95"),
            dedup_key=f"kv_cache_saturation:{d.name}:{episode.since.isoformat()}",
            message=(f"{d.name}: KV cache {100 * (_fullest(sample) or 0):.0f}% full (fullest engine) with "
                     f"{sample.waiting_requests:.0f} requests waiting since {episode.since:%H:%M} UTC; "
                     "add capacity or cap context length"),
            created_at=now)
