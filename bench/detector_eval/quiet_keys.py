"""Quiet keys drawn apart (session s21): a sparse quiet storm (an incident kind) and a quiet blip (a negative control).

Both are rows appended after every other (the world's leaves, its controls, ``EXTRA_CONTROLS``), drawn from a
generator of their own (``np.random.default_rng([seed, 21])``), so each world's traffic and incidents before them
stay what they were, to the byte. Each key is its own team, feature and customer:

- **a quiet key** (all of them, from the first day, so each is warm and has its own failure ratio): a request
  every one to ten minutes at its peak hour (``QUIET_PEAK_RATE``), the daily and weekly profile and the trace's
  bursts of the other leaves, ``QUIET_FAIL`` of its requests failing once, at a frontier model's price;
- **sparse_quiet_storm** (``SPARSE_STORM_KEYS``, one incident each, in the evaluated week): for 30–90 min the
  key sends only bursts of 1–3 minutes, 1–3 requests each, every request failing 3–6 attempts before its last
  goes through (the longest request stays under ``RetryStormRule.loop_attempts``: a storm, not a loop), with
  silent gaps of 5–15 min between bursts. What a quiet storm looks like when its requests are few: the newest
  minutes of most passes sent nothing;
- **quiet_blip** (``QUIET_BLIP_CONTROLS``, a negative control): ``BLIPS_PER_KEY`` times in the evaluated week a
  provider blip of 2–4 min that only this key's traffic shows (its provider's other traffic thin then, as in the
  outside evaluation's false storm: the minutes' cross-section holds the key to its own ratio) hits 1–3 of its
  requests, each failing 1–3 attempts before its last goes through, and then the key sends nothing for
  15–30 min. Normal life: it must not alert. (1–9 failed attempts in all; the outside evaluation's case was
  three requests, 7 of 9 attempts failed.)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bench.detector_eval.traces import Trace
from bench.detector_eval.traffic import (
    DAY,
    EVAL_START,
    FAILED_ATTEMPT_SHARE,
    MEAN_REQUEST_USD,
    PRICES,
    PROVIDERS,
    QUIET_BLIP_CONTROLS,
    SPARSE_STORM_KEYS,
    Incident,
    Leaf,
    World,
)

QUIET_PEAK_RATE = (0.1, 1.0)     # requests a minute at the key's peak hour (the quietest world leaves: ~0.7)
QUIET_FAIL = 0.018
QUIET_PRICE = max(PRICES)         # a frontier model: a storm's failed attempts cost what they can
STORM_MINUTES = (30, 91)          # [low, high): how long a sparse storm lasts
STORM_BURST_MINUTES = (1, 4)
STORM_REQUESTS = (1, 4)           # per burst
STORM_FAILS = (3, 7)              # failed attempts per request in a burst (then its last attempt goes through)
STORM_GAP_MINUTES = (5, 16)       # silent minutes between bursts
BLIPS_PER_KEY = 4
BLIP_APART_MINUTES = 6 * 60       # one key's blips are hours apart
BLIP_MINUTES = (2, 5)
BLIP_REQUESTS = (1, 4)
BLIP_FAILS = (1, 4)               # failed attempts per request in the blip
BLIP_SILENT_MINUTES = (15, 31)    # nothing from the key after the blip


def append(world: World, trace: Trace, seed: int, *, profile_of: Callable[[int, float], np.ndarray],
           hour: np.ndarray, minute_of_hour: np.ndarray, tokens: np.ndarray) -> None:
    """Append the quiet keys' rows to every array of ``world``, the sparse storms to ``world.incidents`` (after
    the others) and the blips to ``world.blips``."""
    rng = np.random.default_rng([seed, 21])
    keys = SPARSE_STORM_KEYS + QUIET_BLIP_CONTROLS
    minutes, first = world.minutes, len(world.leaves)
    days = minutes // DAY
    unit = tokens / tokens.mean() * MEAN_REQUEST_USD * QUIET_PRICE
    mean_cost, var_cost = unit.mean(), unit.var()
    lam = np.empty((len(keys), minutes))
    for k in range(len(keys)):
        phase = rng.integers(0, len(trace.per_minute), size=days * 24)
        lam[k] = rng.uniform(*QUIET_PEAK_RATE) * profile_of(int(rng.integers(9, 17)), float(rng.uniform(0.3, 0.8))) \
            * trace.per_minute[(phase[hour] + minute_of_hour) % len(trace.per_minute)]
    requests = rng.poisson(lam).astype(np.int64)
    failed = rng.binomial(requests, QUIET_FAIL)
    max_attempt = np.where(failed > 0, 2, np.where(requests > 0, 1, 0))
    incidents, blips = [], []
    for k in range(len(SPARSE_STORM_KEYS)):
        length = int(rng.integers(*STORM_MINUTES))
        start = EVAL_START + int(rng.integers(0, 7 * DAY - length - 60))
        _quiet(requests, failed, max_attempt, k, start, start + length)
        t = start
        while t < start + length:
            burst = min(int(rng.integers(*STORM_BURST_MINUTES)), start + length - t)
            for _ in range(int(rng.integers(*STORM_REQUESTS))):
                _request(requests, failed, max_attempt, k, t + int(rng.integers(0, burst)), int(rng.integers(
                    *STORM_FAILS)))
            t += burst + int(rng.integers(*STORM_GAP_MINUTES))
        incidents.append(Incident("sparse_quiet_storm", first + k, start, start + length, leaves=(first + k,)))
    for k in range(len(SPARSE_STORM_KEYS), len(keys)):
        starts: list[int] = []
        while len(starts) < BLIPS_PER_KEY:
            at = EVAL_START + int(rng.integers(0, 7 * DAY - 60))
            if all(abs(at - other) >= BLIP_APART_MINUTES for other in starts):
                starts.append(at)
        for at in sorted(starts):
            length, silent = int(rng.integers(*BLIP_MINUTES)), int(rng.integers(*BLIP_SILENT_MINUTES))
            _quiet(requests, failed, max_attempt, k, at, at + length + silent)
            for _ in range(int(rng.integers(*BLIP_REQUESTS))):
                _request(requests, failed, max_attempt, k, at + int(rng.integers(0, length)), int(rng.integers(
                    *BLIP_FAILS)))
            blips.append(Incident("quiet_blip", first + k, at, at + length + silent, leaves=(first + k,)))
    shape_k = np.where(requests > 0, requests * mean_cost ** 2 / var_cost, 1.0)
    failed_cost = failed * mean_cost * FAILED_ATTEMPT_SHARE
    cost = np.where(requests > 0, rng.gamma(shape_k, var_cost / mean_cost), 0.0) + failed_cost
    rows = {"requests": requests, "failed": failed, "attempts": requests + failed, "cost": cost,
            "failed_cost": failed_cost, "max_attempt": max_attempt, "repeats": np.zeros((len(keys), minutes))}
    for name, extra in rows.items():
        setattr(world, name, np.concatenate([getattr(world, name), extra.astype(np.float32)]))
    providers = rng.integers(0, len(PROVIDERS), size=len(keys))
    world.leaves += [Leaf(t, f, c, PROVIDERS[p]) for (t, f, c), p in zip(keys, providers, strict=True)]
    for incident in incidents:  # the failed attempts beyond the key's usual ratio: all the storm's, near enough
        span = slice(incident.start, incident.end)
        usual = world.requests[incident.leaf, span] * QUIET_FAIL * mean_cost * FAILED_ATTEMPT_SHARE
        incident.excess = np.maximum(world.failed_cost[incident.leaf, span] - usual, 0.0)
        incident.excess_usd = float(incident.excess.sum())
    world.incidents = world.incidents + incidents
    world.blips = blips


def _quiet(requests: np.ndarray, failed: np.ndarray, max_attempt: np.ndarray, k: int, start: int, end: int) -> None:
    """Key ``k`` sends nothing in ``[start, end)`` but what is placed there after."""
    for a in (requests, failed, max_attempt):
        a[k, start:end] = 0


def _request(requests: np.ndarray, failed: np.ndarray, max_attempt: np.ndarray, k: int, minute: int,
             fails: int) -> None:
    """One request of key ``k`` at ``minute``: ``fails`` failed attempts, then one that goes through."""
    requests[k, minute] += 1
    failed[k, minute] += fails
    max_attempt[k, minute] = max(max_attempt[k, minute], fails + 1)
