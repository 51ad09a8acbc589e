"""Idle GPUs and KV-cache saturation, detected from GpuSamples; the deployments file."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from spendstream.configfile import ConfigFileError
from spendstream.detect.gpu import IdleGpuDetector, KvSaturationDetector
from spendstream.pricing.deployments import Deployment, load_deployments
from spendstream.schemas.gpu import GpuSample

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)
DEPLOYMENT = Deployment(name="llama", gpu_type="H100", gpu_count=4, usd_per_gpu_hour=Decimal("3"),
                        idle_below_tokens_per_s=5, idle_after_minutes=10, saturated_after_minutes=2)


def _sample(minute: float, *, tps: float | None = 0.0, kv: float | None = 0.1, waiting: float | None = 0) -> GpuSample:
    return GpuSample(ts=T0 + timedelta(minutes=minute), interval_s=60, deployment="llama",
                     prompt_tokens_per_s=tps, generation_tokens_per_s=None if tps is None else 0.0,
                     kv_cache_utilization=kv, waiting_requests=waiting)


def _run(detector, samples):
    return [(i, a) for i, s in enumerate(samples) for a in detector.observe(s, T0)]


def test_idle_fires_once_after_the_threshold_time_and_resolves_on_traffic() -> None:
    detector = IdleGpuDetector({"llama": DEPLOYMENT})
    samples = [_sample(m, tps=1.0) for m in range(1, 13)] + [_sample(13, tps=200.0), _sample(14, tps=200.0)]
    alerts = _run(detector, samples)
    # idle since 09:00 (start of the first interval); 10 minutes are reached at the sample ending 09:10
    assert [(i, a.state) for i, a in alerts] == [(9, "firing"), (12, "resolved")]
    firing, resolved = alerts[0][1], alerts[1][1]
    assert firing.dedup_key == resolved.dedup_key == "idle_gpu:llama:2026-11-20T09:00:00+00:00"
    assert firing.kind == "idle_gpu" and "$2.00 of GPU time idle" in firing.message  # 4 × $3/h × 10 min
    assert "$2.40" in resolved.message  # 12 idle minutes when traffic came back


def test_unreadable_throughput_is_not_idle() -> None:
    detector = IdleGpuDetector({"llama": DEPLOYMENT})
    assert _run(detector, [_sample(m, tps=None) for m in range(1, 30)]) == []


def test_unknown_deployments_are_ignored() -> None:
    assert IdleGpuDetector({}).observe(_sample(20, tps=0.0), T0) == []


def test_kv_saturation_needs_waiting_requests_and_time() -> None:
    detector = KvSaturationDetector({"llama": DEPLOYMENT})
    samples = [_sample(1, kv=0.97, waiting=0),            # full but nobody waits: fine
               _sample(2, kv=0.97, waiting=8), _sample(3, kv=0.98, waiting=9),
               _sample(4, kv=0.96, waiting=4),            # 09:01 → 09:04: past 2 minutes → fires (once)
               _sample(5, kv=0.99, waiting=12),
               _sample(6, kv=0.85, waiting=3)]            # below 90 %: resolves
    alerts = _run(detector, samples)
    assert [(i, a.state) for i, a in alerts] == [(2, "firing"), (5, "resolved")]
    assert alerts[0][1].observed == Decimal("0.98") and "9 requests waiting" in alerts[0][1].message


def test_deployments_file_errors_name_the_line(tmp_path) -> None:
    path = tmp_path / "deployments.yaml"
    path.write_text("deployments:\n  - name: a\n    gpu_type: H100\n    gpu_count: 0\n    usd_per_gpu_hour: 2\n")
    with pytest.raises(ConfigFileError, match=r"deployments.yaml:4: deployments.0.gpu_count: Input should be greater"):
        load_deployments(path)
    path.write_text("deployments:\n"
                    "  - {name: a, gpu_type: H100, gpu_count: 1, usd_per_gpu_hour: 2.49, pricing: spot}\n")
    assert load_deployments(path)["a"].usd_per_hour == Decimal("2.49")


def test_idle_cost_in_the_alert_is_at_the_price_in_force_then() -> None:
    dated = Deployment(name="llama", gpu_type="H100", gpu_count=4, idle_below_tokens_per_s=5, idle_after_minutes=10,
                       prices=({"effective_from": T0 - timedelta(days=30), "usd_per_gpu_hour": Decimal("3")},
                               {"effective_from": T0 + timedelta(days=1), "usd_per_gpu_hour": Decimal("1")}))
    alerts = _run(IdleGpuDetector({"llama": dated}), [_sample(m, tps=1.0) for m in range(1, 11)])
    assert [a.state for _, a in alerts] == ["firing"]
    assert "$2.00 of GPU time idle" in alerts[0][1].message  # 4 × $3/h × 10 min: not tomorrow's $1/h
