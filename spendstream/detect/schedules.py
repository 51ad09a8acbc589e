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
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import numpy as np
import pyarrow as pa

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
    """Per subject (rows), month back (``MONTHS``) and hour of the span (``SPAN_HOURS``, oldest first): USD."""

    cost: np.ndarray
    starts: list[datetime]   # per month back: the earliest remembered span start (for history)

    def rows(self, which: slice) -> Memory:
        return Memory(self.cost[which], self.starts)


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
            at = (row[known], k, table["h"].to_numpy().astype(np.int64)[known])
            cost[at] = np.maximum(cost[at], table["cost"].to_numpy()[known])
    return Memory(cost, starts)


@dataclass(frozen=True)
class Schedule:
    """Per subject: the dollars per hour of the span the remembered day promises (0: none), and the hours of
    history its oldest sighting adds (0: none)."""

    cost: np.ndarray          # (S, SPAN_HOURS)
    history_hours: np.ndarray  # (S,)
    peak: np.ndarray          # (S, SPAN_HOURS): the largest sighting's dollars per hour (0: never sighted)


def schedule(memory: Memory, expected: np.ndarray, *, now: datetime) -> Schedule:
    """Which remembered days are sightings against ``expected`` (the profile's USD over the same hours, (S, SPAN))."""
    totals = memory.cost.sum(axis=2)                                          # (S, MONTHS)
    sighted = (totals >= QUIET * expected.sum(axis=1)[:, None]) & (totals >= MIN_USD)
    enough = sighted.sum(axis=1) >= SIGHTINGS
    kept = np.where(sighted[:, :, None], memory.cost, 0.0)
    promised = np.sort(kept, axis=1)[:, -SIGHTINGS, :]                        # the SIGHTINGS-th largest
    oldest = np.where(sighted, np.arange(MONTHS)[None, :], -1).max(axis=1)
    back = np.array([(now - s).total_seconds() / 3600 for s in memory.starts])
    return Schedule(np.where(enough[:, None], promised, 0.0),
                    np.where(enough, back[np.maximum(oldest, 0)], 0.0), kept.max(axis=1))
