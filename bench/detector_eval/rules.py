"""The detectors, run over a :class:`~.traffic.World` every 5 minutes of the evaluated week.

Each rule sees, per subject, what the package's query would hand its pure detector at
that instant (sums of the windows it reads), and its decisions come from the package's
own detector classes or thresholds; what is vectorised here is only the arithmetic
over windows. Output: :class:`Fired` state changes, as the ``alerts`` table would hold them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from bench.detector_eval.shipped import LOOKBACKS, RetryStormDetector, SpendAnomalyDetector
from bench.detector_eval.traffic import DAY, EVAL_START, World

STEP = 5  # minutes between passes, as `spendstream notify` and the leader's timer run them


@dataclass(frozen=True, slots=True)
class Fired:
    rule: str
    kind: str
    subject: str
    minute: int          # when the pass ran (the alert's created_at)
    state: str           # firing | escalated (a firing incident's trigger again, at a worse severity) | resolved
    severity: str
    onset: int = -1      # the incident's start as the alert reports it (for PagerDuty's timestamp); -1: minute
    part_of: str = ""    # stored as part of another subject's incident (detect/correlate.py): not delivered


def cumulative(world: World, array: np.ndarray) -> np.ndarray:
    """Per subject, the running sum with a leading 0: the sum over [a, b) is c[:, b] - c[:, a]."""
    per_subject = world.subject_sum(array).astype(np.float64)
    return np.concatenate([np.zeros((per_subject.shape[0], 1)), np.cumsum(per_subject, axis=1)], axis=1)


def passes(world: World) -> range:
    return range(EVAL_START + STEP, world.minutes + 1, STEP)


def current_spend_anomaly(world: World, detector: SpendAnomalyDetector | None = None) -> list[Fired]:
    """``spend_anomaly`` as shipped before issue 18: median of six lookbacks, 3x, $1 floor."""
    d = detector or SpendAnomalyDetector()
    window = int(d.window.total_seconds() // 60)
    backs = [int(b.total_seconds() // 60) for b in LOOKBACKS]
    cost = cumulative(world, world.cost)
    seen = cumulative(world, world.requests)
    firing = np.zeros(len(world.subjects), dtype=bool)
    out = []
    for t in passes(world):
        observed = cost[:, t] - cost[:, t - window]
        history = np.array([np.where(seen[:, t - b] > 0, cost[:, t - b] - cost[:, t - b - window], np.nan)
                            for b in backs])
        with warnings.catch_warnings():  # a key with no history at all has a NaN median: "usually nothing"
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nanmedian(history, axis=0)
        expected = np.maximum(np.nan_to_num(median, nan=0.0), d.min_baseline)
        fire = ~firing & (observed >= d.min_spend) & (observed >= d.factor * expected)
        calm = firing & (observed < d.resolve_factor * expected)
        for s in np.flatnonzero(fire):
            out.append(Fired("current", "spend_anomaly", world.subjects[s], t, "firing", "warning"))
        for s in np.flatnonzero(calm):
            out.append(Fired("current", "spend_anomaly", world.subjects[s], t, "resolved", "info"))
        firing = (firing | fire) & ~calm
    return out


def current_retry_storm(world: World, detector: RetryStormDetector | None = None) -> list[Fired]:
    """``retry_storm`` as shipped before issue 18: per feature, 5 min, 3x the previous day's ratio or 6 attempts."""
    d = detector or RetryStormDetector()
    window = int(d.window.total_seconds() // 60)
    features = [i for i, s in enumerate(world.subjects) if s.startswith("feature=")]
    attempts = cumulative(world, world.attempts)[features]
    retries = cumulative(world, world.failed)[features]
    member = world.membership[features] > 0
    firing = np.zeros(len(features), dtype=bool)
    out = []
    for t in passes(world):
        a = attempts[:, t] - attempts[:, t - window]
        r = retries[:, t] - retries[:, t - window]
        day_a = attempts[:, t - window] - attempts[:, t - window - DAY]
        base = np.where(day_a > 0, (retries[:, t - window] - retries[:, t - window - DAY]) / np.maximum(day_a, 1), 0)
        leaf_max = world.max_attempt[:, t - window:t].max(axis=1)
        longest = np.where(member, leaf_max[None, :], 0).max(axis=1)
        ratio = np.where(a > 0, r / np.maximum(a, 1), 0.0)
        storming = ((r >= d.min_retries) & (ratio >= np.maximum(d.factor * base, d.min_ratio))) | (
            longest >= d.max_attempts)
        calm = (ratio < np.maximum(d.resolve_factor * base, d.min_ratio / 2)) & (longest < d.max_attempts)
        fire, resolve = storming & ~firing, firing & calm
        for i in np.flatnonzero(fire):
            out.append(Fired("current", "retry_storm", world.subjects[features[i]], t, "firing", "error"))
        for i in np.flatnonzero(resolve):
            out.append(Fired("current", "retry_storm", world.subjects[features[i]], t, "resolved", "info"))
        firing = (firing | fire) & ~resolve
    return out


def litellm_daily(world: World, *, factor: float = 3.0, floor_usd: float = 10.0) -> list[Fired]:
    """LiteLLM-style: today's spend > 3x the 7-day daily average and >= $10, checked hourly, once a day a key."""
    cost = cumulative(world, world.cost)
    fired_day = np.full(len(world.subjects), -1)
    out = []
    for t in range(EVAL_START + 60, world.minutes + 1, 60):
        day = (t - 1) // DAY
        today = cost[:, t] - cost[:, day * DAY]
        average = (cost[:, day * DAY] - cost[:, (day - 7) * DAY]) / 7
        fire = (fired_day != day) & (today > factor * average) & (today >= floor_usd)
        for s in np.flatnonzero(fire):
            out.append(Fired("litellm", "daily_spend", world.subjects[s], t, "firing", "warning"))
        fired_day[fire] = day
    return out
