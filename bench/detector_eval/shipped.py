"""The thresholds of the detectors as shipped before issue 18, kept to measure them beside the new ones.

``spend_anomaly``: the last 10 minutes against the median of the same 10 minutes 7, 14, 21 and
28 days and 1 and 2 days back; fires at >= 3x that (floored at $0.25) and >= $1, resolves under
1.5x. ``retry_storm``: per feature, the last 5 minutes; fires at >= 20 retries and a retry
ratio >= 3x the previous day's (and >= 10 %), or one request at 6 attempts; resolves under 1.5x.
(Copied from spendstream/detect/anomaly.py and retry_storm.py at commit 081818d.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

LOOKBACKS = (timedelta(days=7), timedelta(days=14), timedelta(days=21), timedelta(days=28), timedelta(days=1),
             timedelta(days=2))


@dataclass(frozen=True)
class SpendAnomalyDetector:
    window: timedelta = timedelta(minutes=10)
    factor: float = 3.0
    resolve_factor: float = 1.5
    min_spend: float = 1.0
    min_baseline: float = 0.25


@dataclass(frozen=True)
class RetryStormDetector:
    window: timedelta = timedelta(minutes=5)
    min_retries: int = 20
    factor: float = 3.0
    min_ratio: float = 0.10
    resolve_factor: float = 1.5
    max_attempts: int = 6
