"""When retries cost money: the decisions of ``retry_storm`` (and its agent loops), pure and vectorised.

Per feature and per customer, every pass, from counts:

- **storm** (the last ``window_minutes``): failed attempts against a binomial around the
  expected failure ratio — the subject's own (learned over its history), or what every
  *other* subject fails at on the same provider right now if that is higher (a provider
  blip fails everyone on it: normal life, not this feature's storm), floored at ``min_ratio``. Hot at
  ``z_fire`` standard deviations with ``min_failed`` failures and ``factor`` × the expected
  ratio, so a quiet feature whose few requests each take five attempts is a storm;
- **slow burn** (the last ``slow_minutes``): the same test over hours with ``z_slow``, for a
  failure ratio that doubles and stays (the last ``window_minutes`` clearly above the usual too:
  a storm that ended stays in the slow window, and one failure of a quiet key is no evidence);
- **burn scan** (features, over the last ``scan_minutes`` in ``period_minutes`` periods): a sequential test
  of failure *counts* against ``burn_ratio`` × the expected ones, whatever the burn's start: the largest
  log-likelihood ratio of any run of periods ending now (a CUSUM read off the window). Each period's
  expected failures are its attempts × the subject's own ratio, or what all *other* features fail at on
  the provider in that very period if higher: a provider blip raises everyone's expectation for its
  minutes only, not for the hours around it. Hot at a key's ``scan_threshold`` (set from the false alarms a day
  per 100 keys it may give, ``scan_false_per_day_per_100``, and the key's usual failures a day), with
  ``min_failed`` failures in the run, while the last ``scan_now_minutes`` still hold at least half their
  share (by expected failures) of the run's evidence. A period counts at most what a burn could plausibly
  fail in it: a storm's minutes (the fast test's) do not pass for hours of burn;
- **agent loops**: one request id reaching ``loop_attempts`` attempts, or one request
  shape (prompt-prefix fingerprint, model, input size: whatever the request ids; only
  requests with a fingerprint) repeated ``loop_repeats`` times in the window, or
  ``loop_slow_repeats`` times over the slow window (counting the ten minutes it repeated
  in: an agent calling once a minute for hours). Any fires at once.

Calm when the window's failures are back within ``z_calm`` deviations and no loop is seen.
Storms are ``error`` (on-call): failures that persist are paid for and usually break users.
The message states the dollars wasted: billed failed attempts plus repeated calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StormVerdict:
    hot: np.ndarray
    very_hot: np.ndarray
    calm: np.ndarray
    expected_ratio: np.ndarray
    z: np.ndarray


@dataclass(frozen=True)
class BurnScan:
    """Per subject: the burn scan's log-likelihood ratio, and the failed attempts, the expected ones and the
    minutes of the run of periods that gives it (the likeliest start of the burn)."""

    hot: np.ndarray
    llr: np.ndarray
    failed: np.ndarray
    expected: np.ndarray
    minutes: np.ndarray
    threshold: np.ndarray


@dataclass(frozen=True)
class RetryStormRule:
    window_minutes: int = 10
    slow_minutes: int = 120
    min_ratio: float = 0.005
    z_fire: float = 6.0
    z_very: float = 12.0
    z_slow: float = 4.0
    z_calm: float = 2.0
    min_failed: int = 6
    slow_min_failed: int = 20
    factor: float = 2.5
    slow_factor: float = 1.6
    loop_attempts: int = 8
    loop_repeats: int = 12
    loop_slow_repeats: int = 40
    # a slow burn must still fail above the usual in the last window_minutes (a storm that ended stays in the
    # slow window): at least this many failures, this z and this factor of the expected ratio
    burn_now_minutes: int | None = None  # for features (None: window_minutes); a customer's is window_minutes
    burn_now_failed: float = 3.0
    burn_now_z: float = 2.0
    burn_now_factor: float = 1.6
    # the burn scan: a failure ratio burn_ratio × the usual, sustained over any run of periods within scan_minutes
    scan_minutes: int = 360
    period_minutes: int = 5
    burn_ratio: float = 2.0
    scan_false_per_day_per_100: float = 0.5  # the scan's false alarms a day per 100 features (see scan_threshold)
    scan_now_minutes: int = 10  # a burn is still going: these last minutes hold half their share of its evidence

    def scan_threshold(self, failures_per_day: np.ndarray) -> np.ndarray:
        """The log-likelihood ratio a burn must reach, per key from its usual failed attempts a day.

        Read as a CUSUM of the periods, the scan's false alarms come once in ARL ≈ e^h / |drift| periods
        (Wald, Siegmund), the drift being what a period's log-likelihood ratio loses under the usual
        ratio, ``(burn_ratio - 1 - ln burn_ratio)`` × its expected failures: so about
        ``(burn_ratio - 1 - ln burn_ratio) × failures_per_day × e^-h`` false alarms a day per key, whatever
        the period. ``h`` is set so that this is ``scan_false_per_day_per_100`` per 100 keys (the jumps'
        overshoot and the binomial's smaller variance make it an overestimate)."""
        drift = self.burn_ratio - 1 - np.log(self.burn_ratio)
        return np.log(np.maximum(drift * failures_per_day * 100 / self.scan_false_per_day_per_100, 1.0))

    def scan(self, *, failed: np.ndarray, attempts: np.ndarray, own_ratio: np.ndarray,
             counted: np.ndarray | None = None) -> BurnScan:
        """``failed``/``attempts``: shape (subjects, providers, periods), the periods oldest first and the last
        one ending now; ``counted`` as in ``expected_ratio`` (each period's providers' totals). Per period
        and provider, the expected ratio is the subject's own or what all others fail at then, if higher."""
        counted = np.ones(len(own_ratio), dtype=bool) if counted is None else counted
        tried, fails = attempts[counted].sum(axis=0)[None], failed[counted].sum(axis=0)[None]
        others_attempts = tried - attempts
        others = np.where(others_attempts > 0,
                          np.maximum(fails - failed, 0) / np.maximum(others_attempts, 1), 0.0)
        ratio = np.maximum(np.maximum(own_ratio[:, None, None], others), self.min_ratio)
        expected = (ratio * attempts).sum(axis=1)[:, ::-1]  # (subjects, periods), newest first
        # a period counts at most what a burn could plausibly fail in it (its mean and three Poisson deviations):
        # minutes of a storm (the fast test's) are not taken for hours of a burn
        burning = self.burn_ratio * expected
        seen = np.minimum(failed.sum(axis=1)[:, ::-1], np.ceil(burning + 3 * np.sqrt(burning)))
        f_run, e_run = np.cumsum(seen, axis=1), np.cumsum(expected, axis=1)  # runs of periods ending now
        llr = f_run * np.log(self.burn_ratio) - (self.burn_ratio - 1) * e_run
        if llr.shape[1] == 0:
            zero = np.zeros(len(own_ratio))
            return BurnScan(zero.astype(bool), zero, zero, zero, zero, zero)
        best = llr.argmax(axis=1)
        rows = np.arange(len(own_ratio))
        top, failed_run = llr[rows, best], f_run[rows, best]
        threshold = self.scan_threshold(e_run[:, -1] * 24 * 60 / (llr.shape[1] * self.period_minutes))
        # still going: the last scan_now_minutes hold at least half their share (by expected failures) of the
        # run's evidence; what an ended storm or burn left in the window does not keep re-firing its key
        k = min(-(-self.scan_now_minutes // self.period_minutes), llr.shape[1]) - 1
        share = np.where(e_run[rows, best] > 0, e_run[:, k] / np.maximum(e_run[rows, best], 1e-12), 1.0)
        still = (llr[:, k] > 0) & (llr[:, k] >= 0.5 * top * np.minimum(share, 1.0))
        return BurnScan((top >= threshold) & still & (failed_run >= self.min_failed), top, failed_run,
                        e_run[rows, best], (best + 1) * self.period_minutes, threshold)

    def expected_ratio(self, own: np.ndarray, *, failed: np.ndarray, attempts: np.ndarray,
                       counted: np.ndarray | None = None) -> np.ndarray:
        """The ratio each subject is held to, from arrays of shape (subjects, providers) for this window.

        Per provider, the subject's own ratio or what all *other* traffic fails at on that provider
        right now, whichever is higher; mixed by the subject's attempts per provider. The provider's
        totals sum the ``counted`` subjects (default all): one kind of subject, say features, counts
        each request once, so a reader need not read every customer's window to know them. A subject
        outside ``counted`` is compared with those totals less its own traffic, which they contain."""
        counted = np.ones(len(own), dtype=bool) if counted is None else counted
        tried, fails = attempts[counted].sum(axis=0)[None, :], failed[counted].sum(axis=0)[None, :]
        others_attempts = tried - attempts
        others = np.where(others_attempts > 0, np.maximum(fails - failed, 0) / np.maximum(others_attempts, 1), 0.0)
        per_provider = np.maximum(np.maximum(own[:, None], others), self.min_ratio)
        total = attempts.sum(axis=1)
        mixed = (per_provider * attempts).sum(axis=1) / np.maximum(total, 1)
        return np.where(total > 0, mixed, np.maximum(own, self.min_ratio))

    def slow_matters(self, *, failed: np.ndarray, attempts: np.ndarray, own_ratio: np.ndarray,
                     max_attempt: np.ndarray, repeats: np.ndarray, counted: np.ndarray | None = None,
                     slow_repeats: np.ndarray | None = None, now_failed: np.ndarray | None = None,
                     now_attempts: np.ndarray | None = None) -> np.ndarray:
        """Per subject, from the fast window alone: whether its slow window can change its verdict (a burn
        must still fail above the usual now, and a storm is one) or be stated in its message (a loop).
        Another subject's slow window is read by no decision of ``judge`` but the providers' totals,
        which sum the ``counted`` subjects (so those are always needed)."""
        p = self.expected_ratio(own_ratio, failed=failed, attempts=attempts, counted=counted)
        f, a = failed.sum(axis=1), attempts.sum(axis=1)
        return (self._guard(now_failed, now_attempts, f, a, p, own_ratio, counted)
                | self.looping(max_attempt, repeats, slow_repeats))

    def can_fire(self, *, failed: np.ndarray, max_attempt: np.ndarray, repeats: np.ndarray,
                 slow_repeats: np.ndarray) -> np.ndarray:
        """Per subject outside ``judge``'s ``counted`` whose burn window is its fast one (a customer), from its
        fast window's failed attempts (summed over providers), longest request and repeats: whether ``judge``
        can make it hot. A storm needs ``min_failed`` failures in the fast window, a slow burn
        ``burn_now_failed`` there, a loop its attempts or repeats; such a subject weighs in no one else's
        verdict (the providers' totals sum ``counted`` only), so one that cannot fire can be left out."""
        return (failed >= min(self.min_failed, self.burn_now_failed)) | self.looping(max_attempt, repeats,
                                                                                       slow_repeats)

    def looping(self, max_attempt: np.ndarray, repeats: np.ndarray, slow_repeats: np.ndarray | None) -> np.ndarray:
        """Per subject: an agent loop (one request retried on and on, or one request shape repeated)."""
        slow = (slow_repeats >= self.loop_slow_repeats) if slow_repeats is not None else False
        return (max_attempt >= self.loop_attempts) | (repeats >= self.loop_repeats) | slow

    def _guard(self, now_failed: np.ndarray | None, now_attempts: np.ndarray | None, f: np.ndarray, a: np.ndarray,
               p: np.ndarray, own: np.ndarray, counted: np.ndarray | None) -> np.ndarray:
        if now_failed is None or now_attempts is None:
            return self._burning_now(f, a, p)
        p_now = self.expected_ratio(own, failed=now_failed, attempts=now_attempts, counted=counted)
        return self._burning_now(now_failed.sum(axis=1), now_attempts.sum(axis=1), p_now)

    def _burning_now(self, f: np.ndarray, a: np.ndarray, p: np.ndarray) -> np.ndarray:
        ratio = np.where(a > 0, f / np.maximum(a, 1), 0.0)
        return (_z(f, a, p) >= self.burn_now_z) & (f >= self.burn_now_failed) & (ratio >= self.burn_now_factor * p)

    def judge(self, *, failed: np.ndarray, attempts: np.ndarray, own_ratio: np.ndarray,
              slow_failed: np.ndarray, slow_attempts: np.ndarray, max_attempt: np.ndarray,
              repeats: np.ndarray, counted: np.ndarray | None = None,
              slow_repeats: np.ndarray | None = None,
              now_failed: np.ndarray | None = None, now_attempts: np.ndarray | None = None) -> StormVerdict:
        """``failed``/``attempts`` (and the slow window's) per subject and provider: shape (subjects, providers);
        ``counted``: the subjects whose sums are the providers' totals (see ``expected_ratio``);
        ``slow_repeats``: the most requests of one shape over the slow window, in periods it repeated in;
        ``now_failed``/``now_attempts``: per subject and provider, the window a slow burn must still fail in
        (default: the last ``window_minutes``)."""
        p = self.expected_ratio(own_ratio, failed=failed, attempts=attempts, counted=counted)
        f, a = failed.sum(axis=1), attempts.sum(axis=1)
        z = _z(f, a, p)
        ratio = np.where(a > 0, f / np.maximum(a, 1), 0.0)
        storm = (z >= self.z_fire) & (f >= self.min_failed) & (ratio >= self.factor * p)
        p_slow = self.expected_ratio(own_ratio, failed=slow_failed, attempts=slow_attempts, counted=counted)
        sf, sa = slow_failed.sum(axis=1), slow_attempts.sum(axis=1)
        slow_ratio = np.where(sa > 0, sf / np.maximum(sa, 1), 0.0)
        # still going: the last minutes fail above the usual too (a storm that ended stays in the slow window)
        burn = ((_z(sf, sa, p_slow) >= self.z_slow) & (sf >= self.slow_min_failed)
                & (slow_ratio >= self.slow_factor * p_slow) & self._guard(now_failed, now_attempts, f, a, p, own_ratio,
                                                                          counted))
        loop = self.looping(max_attempt, repeats, slow_repeats)
        hot = storm | burn | loop
        very_hot = loop | (storm & (z >= self.z_very) & (f >= 2 * self.min_failed))
        calm = (z < self.z_calm) & ~loop & ~burn
        return StormVerdict(hot, very_hot, calm, p, z)


def _z(failed: np.ndarray, attempts: np.ndarray, p: np.ndarray) -> np.ndarray:
    sd = np.sqrt(np.maximum(attempts * p * (1 - p), 1e-12))
    return np.where(attempts > 0, (failed - attempts * p) / sd, 0.0)
