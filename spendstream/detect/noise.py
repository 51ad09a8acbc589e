"""What a subject's spend usually is, and how much it wanders: learned from hours, applied to minutes.

Pure numpy, no I/O: the hourly refresh (:mod:`spendstream.detect.baseline`) hands it
hour-grain arrays read from ``usage_hours`` once an hour, and every detection pass asks
it about the last minutes; ``bench/detector_eval`` calls the same functions on
simulated arrays.

The model of one subject (a team, feature or customer), per hour of the week:

- **expected requests and dollars**: the median over the weeks of history of that hour
  of the week (the mean while there are fewer than three), shrunk toward the mean of the
  same hour on the same kind of day (weekday or weekend) of the last two weeks, so one
  odd week does not set the baseline and a key with one week of history is not blind;
- **a typical 10-minute peak**: the median, over the same hour and kind of day of the last
  two weeks, of the hour's largest 10-minute spend, taken over the hour and its two
  neighbours. This is how *schedules* are learned: a job at 02:00 ± 5 min puts its whole
  cost in one 10-minute window of hour 1 or 2 every night, so that window is expected;
  bursty traffic learns its own bursts the same way. Where the day's busiest 10 minutes fall in
  that hour (± 1), or its peak there stands far out of the day's hours, on most days of its kind
  (a schedule), the peak is at least the second largest
  of the subject's own per-day peaks there: a job's nights vary, and its median night times a
  margin sits inside that spread (:func:`_own_nights`);
- **a typical busiest 10 minutes of a day**: the median, over the last two weeks' days, of
  the day's largest 10-minute spend. An hour of the week has seen two or four samples, so
  one noisy hour can set it; a day's busiest window is one sample a day over every hour,
  and a subject whose bursts land at random hours has seen them already. A weekend day's is
  the weekdays' at the weekend's level (mean dollars an hour, weekend over weekday): two
  weeks hold four weekend days, too few for the median of a maximum, while the level comes
  from every weekend hour and the shape from ten weekdays;
- **dispersion**: how much more than Poisson the hourly request counts wander around the
  expected ones (``phi`` in var = mu + phi·mu²), so a window's uncertainty comes from
  counts: three requests are noise, three thousand are not;
- **failure ratio**: failed attempts per attempt over the history, for retry storms;
- **price**: dollars per request at each hour of the week (all the dollars over all the requests of the
  same hour on the same kind of day, the last two weeks), and how much more than independent request
  sizes an hour's price wanders around it (``price_cv2``, per request, at least ``SIZE_CV2``): a subject
  whose requests go to several models wanders with its mix, one model's requests with their sizes;
- **warm-up**: how many hours of history the subject has (an anomaly needs a week).

Hours are columns, oldest first; the week starts Monday 00:00 UTC. A subject's hours before
its first request are not history (``first_hour`` masks them).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

HOURS_PER_WEEK = 168
SHRINK = 2.0          # weight, in weeks, of the same-hour-of-day mean against the hour-of-week median
PEAK_DAYS = 14        # days of peaks (and of same-hour means) that the typical peak is the median of
OWN_PEAK_RANK = 2     # a schedule's line: the second largest of its own per-day peaks at that hour (± 1)
STANDS_OUT = 3.0      # ... or where its peak is this many times the day's median hourly peak (a second job)
SIZE_CV2 = 1.0        # squared coefficient of variation of one request's cost (trace sizes: about 1)


@dataclass(frozen=True)
class Profiles:
    """Per subject (rows), per hour of the week (columns) where it has one: the model above."""

    requests: np.ndarray      # (S, 168) expected requests per hour
    cost: np.ndarray          # (S, 168) expected USD per hour
    peak_cost: np.ndarray     # (S, 168) typical largest 10-minute spend in this hour or a neighbour
    dispersion: np.ndarray    # (S,) phi
    fail_ratio: np.ndarray    # (S,) failed attempts per attempt
    history_hours: np.ndarray  # (S,) hours from the first request to the end of the history
    day_peak: np.ndarray | None = None  # (S,) typical largest 10-minute spend of a day (None: not learned)
    weekend_day_peak: np.ndarray | None = None  # (S,) the same, of a weekend day
    per_request: np.ndarray | None = None  # (S, 168) usual USD per request (0: no requests seen at that hour)
    price_cv2: np.ndarray | None = None    # (S,) squared cv of one request's cost, as its hours' prices wander

    def day_peak_in(self, hour_of_week: int) -> np.ndarray | None:
        """The typical busiest 10 minutes of a day of the kind (weekday or weekend) ``hour_of_week`` falls on."""
        if hour_of_week // 24 >= 5 and self.weekend_day_peak is not None:
            return self.weekend_day_peak
        return self.day_peak


def learn(*, requests: np.ndarray, cost: np.ndarray, attempts: np.ndarray, failed: np.ndarray,
          peak_cost: np.ndarray, first_hour_of_week: int, first_hour: np.ndarray) -> Profiles:
    """Learn every subject's profile from hourly arrays of shape (subjects, hours), oldest hour first.

    ``first_hour_of_week`` is where column 0 falls in the week (0: Monday 00:00 UTC);
    ``peak_cost`` each hour's largest 10-minute spend; ``first_hour`` the column of each
    subject's first request (``hours`` when none: no history).
    """
    subjects, hours = requests.shape
    live = np.arange(hours)[None, :] >= first_hour[:, None]
    pad = first_hour_of_week  # NaN in front, so that column 0 of the padded array is Monday 00:00
    weeks = -(-(pad + hours) // HOURS_PER_WEEK)
    tail = weeks * HOURS_PER_WEEK - pad - hours

    def by_week(a: np.ndarray) -> np.ndarray:
        masked = np.where(live, a, np.nan)
        return np.pad(masked, ((0, 0), (pad, tail)), constant_values=np.nan).reshape(subjects, weeks,
                                                                                      HOURS_PER_WEEK)

    req_w, cost_w, peak_w = by_week(requests), by_week(cost), by_week(peak_cost)
    n = (~np.isnan(req_w)).sum(axis=1)                              # (S, 168) weeks of history per slot
    how_req, how_cost = _robust(req_w, n), _robust(cost_w, n)
    # the same hour on the same kind of day, over the last PEAK_DAYS days: (S, days, 24)
    days = min(PEAK_DAYS, weeks * 7)
    day_of = lambda a: a.reshape(subjects, weeks * 7, 24)[:, -days:, :]  # noqa: E731
    weekday = (np.arange(weeks * 7)[-days:] % 7) < 5
    flat_req, flat_cost, flat_peak = day_of(req_w), day_of(cost_w), day_of(peak_w)
    slot_weekend = (np.arange(HOURS_PER_WEEK) // 24) >= 5
    same_req, same_cost, same_peak = (np.zeros((subjects, HOURS_PER_WEEK)) for _ in range(3))
    for is_weekday in (True, False):
        cols = slot_weekend != is_weekday
        pick = weekday == is_weekday
        with warnings.catch_warnings():  # a slot no day of this kind has seen: NaN, then 0
            warnings.simplefilter("ignore", RuntimeWarning)
            mean_req = np.nan_to_num(np.nanmean(flat_req[:, pick, :], axis=1))
            mean_cost = np.nan_to_num(np.nanmean(flat_cost[:, pick, :], axis=1))
            peak = _nanmedian(flat_peak[:, pick, :])
        same_req[:, cols] = np.tile(mean_req, 7)[:, cols]
        same_cost[:, cols] = np.tile(mean_cost, 7)[:, cols]
        same_peak[:, cols] = np.tile(peak, 7)[:, cols]
    # ±1 hour, over the week: Saturday 00:00's neighbour is Friday 23:00 (a window at 00:05 holds five minutes of
    # it), not a weekend 23:00
    same_peak = np.maximum.reduce([np.roll(same_peak, -1, axis=1), same_peak, np.roll(same_peak, 1, axis=1)])
    with warnings.catch_warnings():  # a day before the subject's first request: NaN, not a day
        warnings.simplefilter("ignore", RuntimeWarning)
        busiest = np.nanmax(flat_peak, axis=2)   # (S, days) each day's largest 10 minutes
    same_peak = np.maximum(same_peak, _own_nights(flat_peak, busiest, weekday, slot_weekend))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        day_peak = _nanmedian(busiest)
        weekday_peak = _nanmedian(busiest[:, weekday])
        # a weekend day has the weekdays' shape at its own level: mean dollars an hour, over every hour of
        # either kind (a day cut short by the history's ends counts by its hours)
        level = np.nanmean(flat_cost[:, ~weekday, :], axis=(1, 2)) / np.nanmean(flat_cost[:, weekday, :], axis=(1, 2))
    known = np.isfinite(level) & (weekday_peak > 0)
    weekend_day_peak = np.where(known, weekday_peak * np.where(known, level, 0.0), day_peak)
    out_req = (n * how_req + SHRINK * same_req) / (n + SHRINK)
    out_cost = (n * how_cost + SHRINK * same_cost) / (n + SHRINK)
    hour_of_week = (np.arange(hours) + first_hour_of_week) % HOURS_PER_WEEK
    per_request, price_cv2 = _price(same_req, same_cost, requests, cost, live, hour_of_week)
    mu = out_req[:, hour_of_week]
    with np.errstate(invalid="ignore", divide="ignore"):
        excess = np.where(live & (mu >= 5), ((requests - mu) ** 2 - mu) / np.maximum(mu, 1e-9) ** 2, np.nan)
    dispersion = np.clip(_nanmean(excess), 0.0, 4.0)
    total_attempts = (attempts * live).sum(axis=1)
    fail_ratio = np.where(total_attempts > 0, (failed * live).sum(axis=1) / np.maximum(total_attempts, 1), 0.0)
    return Profiles(out_req, out_cost, same_peak, dispersion, fail_ratio, np.maximum(hours - first_hour, 0),
                    day_peak, weekend_day_peak, per_request, price_cv2)


PRICE_MIN_REQUESTS = 5  # an hour with fewer requests says little about how its price wanders


def _price(same_req: np.ndarray, same_cost: np.ndarray, requests: np.ndarray, cost: np.ndarray, live: np.ndarray,
           hour_of_week: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Usual USD per request, (S, 168): the same-hour-and-kind-of-day means' ratio (a ratio of sums, so a
    request costs its mean, not a median hour's), else the subject's over its whole history; and ``price_cv2``,
    (S,): the mean over its hours of PRICE_MIN_REQUESTS or more of (dollars − usual × requests)² ÷ (usual² ×
    requests), which is one request's squared cv where sizes are independent and more where the mix wanders."""
    total_req, total_cost = (requests * live).sum(axis=1), (cost * live).sum(axis=1)
    overall = np.where(total_req > 0, total_cost / np.maximum(total_req, 1e-9), 0.0)
    per_request = np.where(same_req > 0, same_cost / np.maximum(same_req, 1e-9), overall[:, None])
    usual = per_request[:, hour_of_week] * requests
    counted = live & (requests >= PRICE_MIN_REQUESTS) & (usual > 0)
    usual[~counted] = 1.0  # (not counted: its term is 0 below)
    spread = (np.square(cost - usual) * requests / np.square(usual) * counted).sum(axis=1)
    hours = counted.sum(axis=1)
    return per_request, np.maximum(spread / np.maximum(hours, 1), SIZE_CV2)


def _own_nights(flat_peak: np.ndarray, busiest: np.ndarray, weekday: np.ndarray, slot_weekend: np.ndarray
                ) -> np.ndarray:
    """(S, 168): where a subject's busiest 10 minutes of a day fall at this hour (± 1), or its peak there is
    ``STANDS_OUT`` × the day's median hourly peak or more, on most days of its kind (a schedule: a nightly job, a
    weekday report, a lunch peak, a team's second job), the ``OWN_PEAK_RANK``-th largest of its per-day peaks there
    over those days; elsewhere 0. ``busiest``: (S, days) each day's largest 10 minutes.

    A schedule's size varies night to night, so the median of its nights times a margin sits inside its own
    spread, and its larger nights fire. Its upper nights are the line: the second largest, not the largest,
    so that one past night far over (an incident) does not hide the next for two weeks; a night several times
    its usual top is still far over. Not for traffic whose bursts land at any hour: its day's peak is at this
    hour on a few days, and its line stays the median of its bursts."""
    subjects, days, _ = flat_peak.shape
    seq = flat_peak.reshape(subjects, days * 24)
    gap = np.full((subjects, 1), np.nan)  # a day's 00:00 has the day before's 23:00 as its neighbour
    around = np.fmax(np.fmax(np.concatenate([gap, seq[:, :-1]], axis=1), seq),
                     np.concatenate([seq[:, 1:], gap], axis=1)).reshape(subjects, days, 24)
    usual = _nanmedian(flat_peak.reshape(subjects * days, 24)).reshape(subjects, days)  # the day's median hour
    # the day's busiest 10 minutes lie in this hour ± 1, or its peak there stands far out of the day's hours
    there = (((around >= busiest[:, :, None]) | (around >= STANDS_OUT * usual[:, :, None]))
             & (around > 0) & (busiest[:, :, None] > 0))
    out = np.zeros((subjects, HOURS_PER_WEEK))
    for is_weekday in (True, False):
        pick = weekday == is_weekday
        known = (~np.isnan(busiest[:, pick])).sum(axis=1)[:, None]            # (S, 1) days of this kind
        most = (there[:, pick, :].sum(axis=1) * 2 > known) & (known >= OWN_PEAK_RANK + 1)  # (S, 24)
        ordered = np.sort(np.where(np.isnan(around[:, pick, :]), -np.inf, around[:, pick, :]), axis=1)
        rank = ordered[:, -OWN_PEAK_RANK, :] if ordered.shape[1] >= OWN_PEAK_RANK else np.zeros((subjects, 24))
        line = np.where(most & np.isfinite(rank), rank, 0.0)
        cols = slot_weekend != is_weekday
        out[:, cols] = np.tile(line, 7)[:, cols]
    return out


def _robust(samples: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Over axis 1: the median of the non-NaN samples when there are three or more, else their mean (0 if none)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nan_to_num(np.nanmean(samples, axis=1))
    return np.where(n >= 3, _nanmedian(samples), mean)


def _nanmedian(a: np.ndarray) -> np.ndarray:
    """The median over axis 1 ignoring NaN (0 where all are NaN); numpy's nanmedian is slow on many rows."""
    n = (~np.isnan(a)).sum(axis=1, keepdims=True)
    ordered = np.sort(np.where(np.isnan(a), np.inf, a), axis=1)  # NaN (as inf) sorts last
    lo = np.take_along_axis(ordered, np.maximum((n - 1) // 2, 0), axis=1)
    hi = np.take_along_axis(ordered, np.maximum(n // 2, 0).clip(max=a.shape[1] - 1), axis=1)
    return np.where(n > 0, (lo + hi) / 2, 0.0)[:, 0]


def _nanmean(a: np.ndarray) -> np.ndarray:
    n = (~np.isnan(a)).sum(axis=1)
    return np.where(n > 0, np.nansum(a, axis=1) / np.maximum(n, 1), 0.0)


@dataclass(frozen=True)
class Expectation:
    """One window of a subject, as the model expects it: dollars, their standard deviation, the typical peak,
    the requests and how much more than Poisson their count wanders (``phi``, 0: Poisson)."""

    cost: np.ndarray
    sigma: np.ndarray
    peak: np.ndarray
    requests: np.ndarray
    dispersion: np.ndarray | float = 0.0


def upper(cost: np.ndarray, sigma: np.ndarray, z: float) -> np.ndarray:
    """What a window's dollars, mean ``cost`` and standard deviation ``sigma``, exceed as rarely as a normal
    exceeds ``z`` standard deviations: the quantile of the gamma with that mean and deviation (Wilson–Hilferty).

    A window's dollars are a compound sum: a negative-binomial count of right-skewed request costs. The gamma
    of the same mean and variance has shape (expected requests) / (1 + ``SIZE_CV2`` + phi × expected
    requests): a window of few requests has a long tail, which mean + z·sigma under-states (a quiet key's
    window of half again its usual count at twice its usual size is five such sigmas: every week one of a
    few hundred keys has one); a busy window's gamma is about the normal again. The gamma's tail is longer
    than the compound sum's where the count is small (it spreads the count's randomness over the sizes):
    a count far beyond its own tail is :func:`count_upper`'s to judge.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        shape = np.where(sigma > 0, (cost / np.where(sigma > 0, sigma, 1.0)) ** 2, np.inf)
        a = 1 / (9 * shape)
        quantile = cost * (1 - a + z * np.sqrt(a)) ** 3
    return np.where((cost > 0) & (sigma > 0), quantile, cost + z * sigma)


def count_upper(requests: np.ndarray, dispersion: np.ndarray | float, z: float) -> np.ndarray:
    """The count of requests a window exceeds as rarely as a normal exceeds ``z`` standard deviations, when
    ``requests`` are expected and the count is negative binomial (var = mu + phi·mu², ``dispersion`` = phi).

    Cornish–Fisher to the skewness term: mu + sd·(z + (z² − 1)·g/6), with the negative binomial's own
    skewness g = (1 + 2·phi·mu) / sqrt(mu·(1 + phi·mu)) (its third cumulant over sd³). Poisson(1) at z = 4
    gives 7.5 (exactly: 8 calls or more have probability 1e-5), Poisson(20) 40.4 (40), Poisson(0.01) 2.9 (3);
    at mu = 0 it is (z² − 1)/6 requests. No sizes here: twelve calls in a window where one is usual are
    beyond this tail (Poisson: about 1e-9), which the gamma of the window's dollars (:func:`upper`) cannot
    say when one call is usual (its shape is then about 1/2).
    """
    sd = np.sqrt(requests + dispersion * requests ** 2)
    return requests + z * sd + (z * z - 1) / 6 * (1 + 2 * dispersion * requests)  # sd·g = 1 + 2·phi·mu


def expect(profiles: Profiles, rows: np.ndarray, hour_of_week: int, *, window_minutes: float) -> Expectation:
    """What ``rows`` of ``profiles`` should spend in a window of ``window_minutes`` in ``hour_of_week``.

    The window's requests are negative-binomial around the hourly rate (``dispersion``), each
    request's cost varies around the hour's mean cost per request (``SIZE_CV2``).
    """
    share = window_minutes / 60
    req = profiles.requests[rows, hour_of_week] * share
    cost = profiles.cost[rows, hour_of_week] * share
    per_request = np.where(req > 0, cost / np.maximum(req, 1e-9), 0.0)
    variance = per_request ** 2 * (req * (1 + SIZE_CV2) + profiles.dispersion[rows] * req ** 2)
    return Expectation(cost, np.sqrt(variance), profiles.peak_cost[rows, hour_of_week], req,
                       profiles.dispersion[rows])
