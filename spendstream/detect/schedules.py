"""Schedules longer than the baselines' four weeks: a job on a day of the month.

The hourly profile (:func:`spendstream.detect.noise.learn`) holds four weeks, so a job that
runs on the last day of every month (or the 1st, or the 15th) is new every time it runs: a
new spender, or an anomaly if its key spends a little on other days. This module gives the
refresh a memory of such days that stays bounded and cheap: for the hours around the one
being learned (the slow window's 24 and the fast window's neighbours), what each subject spent
at the same place in each of the last ``MONTHS`` months (the same day of the month, and the
same distance from the month's end), read from the hour rollups like the rest of the
refresh (``SPAN_HOURS`` × ``MONTHS`` × at most two places: under a tenth of what the
profile reads).

A remembered month counts as a *sighting* when the subject spent there at least ``QUIET``
times what its profile expects of the same hours (a key quiet except on that day), and at
least ``MIN_USD``. With ``SIGHTINGS`` of them, the subject expects the day again: its
expected dollars per hour are at least the ``SIGHTINGS``-th largest of the sightings' (so one
odd month does not set them), and its history reaches back to its oldest sighting (it is not
new). One sighting is less: it does not make a key old or raise its expected dollars, but the
largest sighting's dollars per hour bound the hour's typical peak, so a monthly job seen once
(last month) is not an anomaly when it runs again at its size, while ten times it still is.
A busy key's ordinary day is not a sighting, so its weekends and spikes stay watched.

How far a repeat of a job seen once may stray (:func:`promised_peak`): one sighting has no spread
of its own, and the rule's margin over a typical peak (``peak_margin``) assumes the peak is a
typical run, where one sighting is any run. What is known of it is its dollars *and its
requests*: under the detectors' count model (:mod:`spendstream.detect.noise`: a count of requests
of varying size) a repeat differs from the sighting by the noise of both draws, twice the
variance of one (a prediction interval, the sqrt(1 + 1/n) of a t-interval at n = 1, with the
spread from the counts instead of from samples). The window is held to the larger of the margin
over the sighting and that prediction's tail at the rule's ``z``: a job of a few hundred requests
seen once may come back a third larger by chance; one of thousands may not, and the margin is
what it keeps. With ``SIGHTINGS`` the job is expected, and the largest of them (above a typical
run: a third run exceeds the larger of two draws one time in three, not one in two) is the peak,
as before. The bound is an hour's dollars: a job spread over its hour has a window far under
them, and the widening adds to that slack (the rollups keep no finer grain a month back).
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import numpy as np
import pyarrow as pa

from spendstream.detect.noise import SIZE_CV2, upper

MONTHS = 3
SIGHTINGS = 2
QUIET = 3.0
MIN_USD = 1.0
BEFORE_HOURS = 24     # remembered hours before the learned one: the slow window
AFTER_HOURS = 2       # and from it: its hour and the next (the fast window's peak looks one hour around)
SPAN_HOURS = BEFORE_HOURS + AFTER_HOURS


def places(day: date, months_back: int) -> set[date]:
    """Where ``day`` falls ``months_back`` months earlier: the same day of the month (when that month has it)
    and the same number of days before the month's end (the last day stays the last day)."""
    year, month = divmod(day.year * 12 + day.month - 1 - months_back, 12)
    month += 1
    length = calendar.monthrange(year, month)[1]
    from_end = calendar.monthrange(day.year, day.month)[1] - day.day
    out = {date(year, month, length - from_end)} if from_end < length else set()
    if day.day <= length:
        out.add(date(year, month, day.day))
    return out


@dataclass(frozen=True)
class Memory:
    """Per subject (rows), month back (``MONTHS``) and hour of the span (``SPAN_HOURS``, oldest first): USD, and
    the requests behind them (None: not read; a sighting's peak is then its dollars)."""

    cost: np.ndarray
    starts: list[datetime]   # per month back: the earliest remembered span start (for history)
    requests: np.ndarray | None = None

    def rows(self, which: slice) -> Memory:
        return Memory(self.cost[which], self.starts, None if self.requests is None else self.requests[which])


def _spans(hour: datetime) -> list[list[datetime]]:
    """Per month back, the starts of the spans around ``hour``'s places in it, earliest first."""
    of_day = hour - datetime.combine(hour.date(), time(), hour.tzinfo)
    return [sorted(datetime.combine(p, time(), hour.tzinfo) + of_day - timedelta(hours=BEFORE_HOURS)
                   for p in places(hour.date(), k + 1)) for k in range(MONTHS)]


def spans(hour: datetime) -> list[tuple[datetime, datetime]]:
    """The hours :func:`remember` reads for ``hour``, as ``[start, end)`` ranges."""
    return [(start, start + timedelta(hours=SPAN_HOURS)) for month in _spans(hour) for start in month]


def remember(read: Callable[[datetime, datetime], pa.Table], hour: datetime, subjects: np.ndarray) -> Memory:
    """What ``subjects`` (sorted) spent in the span around ``hour`` at its places in the last ``MONTHS`` months.

    ``read(start, end)`` gives the refresh's subject-hours of ``[start, end)`` (``subject``, ``h`` from
    ``start``, ``cost``): :func:`spendstream.detect.subject_hours.read`.
    """
    cost = np.zeros((len(subjects), MONTHS, SPAN_HOURS))
    requests = np.zeros(cost.shape)
    starts: list[datetime] = []
    for k, month in enumerate(_spans(hour)):
        starts.append(month[0])
        for start in month:  # two places, one month: the larger of the two (the same job, seen twice)
            table = read(start, start + timedelta(hours=SPAN_HOURS))
            if not table.num_rows:
                continue
            names = table["subject"].to_numpy(zero_copy_only=False).astype(str)
            row = np.searchsorted(subjects, names)
            known = (row < len(subjects)) & (subjects[np.minimum(row, len(subjects) - 1)] == names)
            rows, hours = row[known], table["h"].to_numpy().astype(np.int64)[known]
            usd, calls = table["cost"].to_numpy()[known], table["requests"].to_numpy()[known]
            larger = usd > cost[rows, k, hours]
            cost[rows[larger], k, hours[larger]] = usd[larger]
            requests[rows[larger], k, hours[larger]] = calls[larger]
    return Memory(cost, starts, requests)


@dataclass(frozen=True)
class Schedule:
    """Per subject: the dollars per hour of the span the remembered day promises (0: none), and the hours of
    history its oldest sighting adds (0: none)."""

    cost: np.ndarray          # (S, SPAN_HOURS)
    history_hours: np.ndarray  # (S,)
    peak: np.ndarray          # (S, SPAN_HOURS): the typical peak the sightings promise (:func:`promised_peak`; 0: none)


def schedule(memory: Memory, expected: np.ndarray, *, now: datetime, z: float, margin: float) -> Schedule:
    """Which remembered days are sightings against ``expected`` (the profile's USD over the same hours, (S, SPAN));
    ``z`` and ``margin``: the spend rule's ``z_fire`` and ``peak_margin`` (:func:`promised_peak`)."""
    totals = memory.cost.sum(axis=2)                                          # (S, MONTHS)
    sighted = (totals >= QUIET * expected.sum(axis=1)[:, None]) & (totals >= MIN_USD)
    enough = sighted.sum(axis=1) >= SIGHTINGS
    kept = np.where(sighted[:, :, None], memory.cost, 0.0)
    promised = np.sort(kept, axis=1)[:, -SIGHTINGS, :]                        # the SIGHTINGS-th largest
    oldest = np.where(sighted, np.arange(MONTHS)[None, :], -1).max(axis=1)
    back = np.array([(now - s).total_seconds() / 3600 for s in memory.starts])
    largest = kept.argmax(axis=1)[:, None, :]                                 # (S, 1, SPAN): its month
    usd = np.take_along_axis(kept, largest, axis=1)[:, 0, :]
    requests = None if memory.requests is None else np.take_along_axis(memory.requests, largest, axis=1)[:, 0, :]
    once = (sighted.sum(axis=1) == 1)[:, None]
    return Schedule(np.where(enough[:, None], promised, 0.0),
                    np.where(enough, back[np.maximum(oldest, 0)], 0.0),
                    np.where(once, promised_peak(usd, requests, z=z, margin=margin), usd))


def promised_peak(usd: np.ndarray, requests: np.ndarray | None, *, z: float, margin: float) -> np.ndarray:
    """The typical 10-minute peak an hour seen once as ``usd`` from ``requests`` promises, such that ``margin`` × it
    is the larger of ``margin`` × ``usd`` and the tail at ``z`` of a repeat's dollars: the gamma
    (:func:`~spendstream.detect.noise.upper`) around ``usd`` whose variance is twice one draw's under the count
    model (``requests`` of the sighting's mean size, size cv² ``SIZE_CV2``). An hour's dollars bound its
    10 minutes. Without ``requests``, ``usd`` itself."""
    if requests is None:
        return usd
    with np.errstate(invalid="ignore", divide="ignore"):
        # r requests of mean size c/r: variance (c/r)² · r · (1 + cv²), once for the repeat, once for the sighting
        sigma = np.where(requests > 0, usd * np.sqrt(2 * (1 + SIZE_CV2) / np.maximum(requests, 1e-9)), 0.0)
    return np.maximum(usd, upper(usd, sigma, z) / margin)
