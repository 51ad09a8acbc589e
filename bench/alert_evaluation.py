"""How good are the spend-anomaly detector and the LiteLLM-style rule? Replayed traffic, injected incidents.

Traffic (seeded, generated on top of the bundled Azure conversation trace): per
key a base spend per minute (Zipf over keys), a time-of-day and day-of-week
profile, the trace's own minute-by-minute request volume as the burst pattern
(its hour tiled), and log-normal noise. Incidents are injected on the second
week: spikes (×6 for 30–90 min), retry-storm-like bursts (×4 for 15–30 min) and
slow ramps (up to ×5 over 4–8 h). Only keys where the incident's peak window
spends at least twice the detector's minimum-spend floor are used — the floor
exists so that tiny keys do not page.

Measures per rule: recall (incidents with an alert on their key between their
start and one window after their end), precision (alerts that fell inside an
incident), false alarms per day per 100 keys, and the detection delay in windows.
The LiteLLM-style rule is "today's spend > 3 × the 7-day daily average and ≥ $10,
checked hourly".
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np

from spendstream.demo.traffic import load_trace
from spendstream.detect.anomaly import LOOKBACKS, SpendAnomalyDetector

MINUTES_PER_DAY = 1440


@dataclass(frozen=True)
class Incident:
    key: int
    kind: str
    start: int   # minute index
    end: int


@dataclass
class RuleResult:
    name: str
    incidents: int
    detected: int
    alerts: int
    true_alerts: int
    false_alarms_per_day_per_100_keys: float
    delays_windows: list[float]

    @property
    def recall(self) -> float:
        return self.detected / self.incidents if self.incidents else 1.0

    @property
    def precision(self) -> float:
        return self.true_alerts / self.alerts if self.alerts else 1.0

    @property
    def median_delay(self) -> float:
        return statistics.median(self.delays_windows) if self.delays_windows else float("nan")

    def line(self) -> str:
        return (f"{self.name:<26} recall {self.recall:.3f} ({self.detected}/{self.incidents})  precision "
                f"{self.precision:.3f} ({self.true_alerts}/{self.alerts})  false alarms/day/100 keys "
                f"{self.false_alarms_per_day_per_100_keys:.2f}  median delay {self.median_delay:.1f} windows")


def traffic(days: int, keys: int, seed: int) -> np.ndarray:
    """Spend per key per minute (USD), shape (keys, days × 1440)."""
    rng = np.random.default_rng(seed)
    rows = load_trace()
    per_minute = np.bincount([int(r.offset_s // 60) for r in rows], minlength=60)[:60].astype(float)
    bursts = np.tile(per_minute / per_minute.mean(), days * 24)
    minutes = np.arange(days * MINUTES_PER_DAY)
    hour = (minutes // 60) % 24
    weekday = (minutes // MINUTES_PER_DAY) % 7
    profile = (0.35 + 0.65 * np.exp(-((hour - 14) / 5.0) ** 2)) * np.where(weekday >= 5, 0.55, 1.0)
    base = 2.0 / np.arange(1, keys + 1) ** 0.9                         # USD per minute at the daily peak
    noise = rng.lognormal(0.0, 0.25, size=(keys, minutes.size))
    return base[:, None] * (profile * bursts)[None, :] * noise


def inject(spend: np.ndarray, count: int, detector: SpendAnomalyDetector, seed: int) -> list[Incident]:
    rng = random.Random(seed)
    keys, total = spend.shape
    window = int(detector.window.total_seconds() // 60)
    incidents: list[Incident] = []
    while len(incidents) < count:
        kind = rng.choice(["spike", "spike", "storm", "ramp"])
        key = rng.randrange(keys)
        start = rng.randrange(7 * MINUTES_PER_DAY + 60, total - 10 * 60)
        if any(i.key == key and abs(i.start - start) < 2 * MINUTES_PER_DAY for i in incidents):
            continue
        if kind == "ramp":
            length = rng.randrange(240, 480)
            factor = 1 + 4 * np.clip(np.arange(length + 60) / length, 0, 1)
            end = start + length + 60
        else:
            length = rng.randrange(30, 90) if kind == "spike" else rng.randrange(15, 30)
            factor = np.full(length, 6.0 if kind == "spike" else 4.0)
            end = start + length
        during = spend[key, start:end] * factor
        peak = during[-window:] if kind == "ramp" else during[:window]
        if peak.sum() < 2 * detector.min_spend:
            continue  # too small to page, by design: its peak window must clear twice the floor
        spend[key, start:end] *= factor
        incidents.append(Incident(key, kind, start, end))
    return incidents


def run_detector(spend: np.ndarray, detector: SpendAnomalyDetector, first: int, step: int) -> list[tuple[int, int]]:
    """(key, onset minute) of every firing alert, evaluating every ``step`` minutes from ``first``."""
    window = int(detector.window.total_seconds() // 60)
    sums = np.concatenate([np.zeros((spend.shape[0], 1)), np.cumsum(spend, axis=1)], axis=1)
    backs = [int(b.total_seconds() // 60) for b in LOOKBACKS]
    onsets: list[tuple[int, int]] = []
    now0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
    for key in range(spend.shape[0]):
        firing_since = None
        for t in range(first, spend.shape[1] + 1, step):
            observed = sums[key, t] - sums[key, t - window]
            history = [float(sums[key, t - b] - sums[key, t - b - window]) if t - b - window >= 0 else None
                       for b in backs]
            alert = detector.evaluate(f"k{key}", float(observed), history, firing_since,
                                      now0 + timedelta(minutes=t))
            if alert is not None:
                if alert.state == "firing":
                    firing_since = alert.window_start
                    onsets.append((key, t))
                else:
                    firing_since = None
    return onsets


def run_litellm_rule(spend: np.ndarray, first: int) -> list[tuple[int, int]]:
    """Today's spend > 3 × the 7-day daily average and ≥ $10, checked hourly; once a day per key."""
    onsets = []
    daily = spend.reshape(spend.shape[0], -1, MINUTES_PER_DAY).sum(axis=2)
    for key in range(spend.shape[0]):
        fired_day = -1
        for t in range(first, spend.shape[1] + 1, 60):
            day = (t - 1) // MINUTES_PER_DAY
            if day == fired_day or day < 7:
                continue
            today = spend[key, day * MINUTES_PER_DAY:t].sum()
            average = daily[key, day - 7:day].mean()
            if today > 3 * average and today >= 10:
                onsets.append((key, t))
                fired_day = day
    return onsets


def score(name: str, onsets: list[tuple[int, int]], incidents: list[Incident], window: int, days: float,
          keys: int) -> RuleResult:
    detected, delays = 0, []
    for incident in incidents:
        hits = [t for k, t in onsets if k == incident.key and incident.start < t <= incident.end + window]
        if hits:
            detected += 1
            delays.append((min(hits) - incident.start) / window)
    true = sum(any(k == i.key and i.start < t <= i.end + window for i in incidents) for k, t in onsets)
    false = len(onsets) - true
    return RuleResult(name, len(incidents), detected, len(onsets), true, false / days / (keys / 100), delays)


def evaluate(days: int = 14, keys: int = 100, incidents: int = 40, seed: int = 3,
             detector: SpendAnomalyDetector | None = None) -> tuple[RuleResult, RuleResult]:
    detector = detector or SpendAnomalyDetector()
    spend = traffic(days, keys, seed)
    injected = inject(spend, incidents, detector, seed)
    first = 7 * MINUTES_PER_DAY
    window = int(detector.window.total_seconds() // 60)
    evaluated_days = (spend.shape[1] - first) / MINUTES_PER_DAY
    ours = score("spendstream spend_anomaly", run_detector(spend, detector, first, step=5), injected, window,
                 evaluated_days, keys)
    litellm = score("LiteLLM-style daily rule", run_litellm_rule(spend, first), injected, window, evaluated_days, keys)
    return ours, litellm
