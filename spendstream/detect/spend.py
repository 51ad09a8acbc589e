"""When spend is anomalous: the decisions of ``spend_anomaly`` and ``new_spender``, pure and vectorised.

Two windows per subject, one incident (:mod:`spendstream.detect.incidents`):

- **fast** (the last ``window_minutes``): hot when the dollars clear all of: their tail
  (:meth:`tail`: as rare as a normal's ``z_fire`` standard deviations, from the expected count of
  requests and their sizes, so a quiet key needs a large multiple and a busy one a small one),
  ``min_ratio`` × expected, ``peak_margin`` × the typical 10-minute peak of this hour (learned
  schedules and bursts), and an excess of ``min_excess_usd``; with at least ``min_requests``
  requests (a window of three requests is noise). Very hot (fires at once) at ``very_hot_factor``
  × that threshold and twice the minimum excess, or at ``far_over_factor`` × it with the minimum
  excess: a small key's spike is far past its line while still under $2 over (its second hot pass
  only repeated what the first said). Calm under the expected dollars plus ``z_calm``
  deviations (or the typical peak).
  The last ``short_minutes`` of that window (read in the same pass) can make a hot subject very hot,
  never make one hot: when they clear ``very_hot_factor`` × the same threshold for a window that long
  (the tail of the same model over those minutes, the ratio, ``peak_margin`` × the typical peak at
  that window's share of it) and twice the minimum excess. A spike held by a bursty key's typical
  peak becomes hot a pass or two after its onset, the 10-minute window still part spike; the short
  one can be all spike.
  A feature × customer pair (``day_peak_for``) must beat, besides, ``day_peak_share`` of its usual
  busiest 10 minutes of a day of this kind (weekday or weekend: :meth:`peak`,
  :meth:`~spendstream.detect.noise.Profiles.day_peak_in`) and ``pair_min_ratio`` × expected: a pair has few
  requests an hour, so its hour-of-week peak, learned from two or four samples, is mostly luck;
  but that day peak is the largest of a day's 144 windows, mostly at the pair's busiest hour, so
  a night or weekend window near it is news (abuse, a weekend spike), not the pair's usual burst.
- **slow** (the last 24 closed hours, refreshed hourly): hot when the median, over the
  hours where at least ``slow_min_requests`` were expected, of observed ÷ expected dollars
  is at least ``slow_ratio`` and the day's excess at least ``slow_min_excess_usd``: a
  sustained shift or a creep over days, which no 10-minute window sees; a one-hour spike
  does not move a median of 24 hours. Each hour adds at most ``slow_hour_cap`` × its expected
  dollars to that excess: a shift is many hours a little over, while a burst's hours, far over,
  are the fast window's (uncapped, a night abuse that fired and resolved came back as "a
  sustained shift" of its own dollars the next afternoon). After a previous day whose median ratio
  was ``slow_sustained_ratio`` (growth, not a day's wobble: a creep), the excess need only clear the
  day's own noise (:meth:`SpendAnomalyRule.slow`). Calm under ``slow_calm_ratio``.
  The slow window is also hot when **the price** of each of the last ``price_hours`` closed hours
  is new (:meth:`price`): an hour's dollars against what its own requests cost at the subject's
  usual dollars per request in that hour of the week, over the tail of that many requests' costs as
  its own hours' prices wander and at least ``min_ratio`` × it, with at least ``min_requests``
  requests and ``min_excess_usd`` over. A feature moved to a pricier model keeps its requests and
  multiplies their price: where it is a small part of a bursty subject, its dollars stay inside the
  10-minute window's peak, and two hours are a small part of a day's median; but given the count,
  no burst of ordinary requests explains them. Hours, not the fast window: sixfold the requests, so
  a quiet key's switch is seen. More than one: a switch is a deploy and stays, while a subject has
  thousands of hours a week, so one of them far in its tail is chance (an hour of one heavy user);
  two in a row are not. Calm when the last hour is under that line at ``z_calm``.

No anomaly without ``warmup_hours`` of history: until then a subject that spends
``new_spender_usd`` in a day raises one ``new_spender`` instead (never a page).
An open incident resolves on the windows that held it (:func:`resolve_calm`): the fast window calm, and the slow
window calm as well unless the slow window was already between hot and calm (its band) when the incident opened
(the verdict of that hour, from the closed hours before it) and has not been hot since. A fast rise (a spike, a
night abuse) on a subject whose day already ran a little over its usual (a median ratio between
``slow_calm_ratio`` and ``slow_ratio``) is over when its 10 minutes are; a sustained shift or a new price, which
the slow window sees, and a band the rise itself brought (a switch's first hour at a new price) still need it
calm.

Severity: ``error`` (the on-call route) when the fast window's excess runs at
``page_usd_per_hour`` or more, else ``warning``; slow-only shifts are ``warning``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import numpy as np

from spendstream.detect.noise import SIZE_CV2, Expectation, count_upper, upper


def resolve_calm(fast_calm: np.ndarray, slow_calm: np.ndarray, slow_held: np.ndarray) -> np.ndarray:
    """Calm for an open incident's resolve count: its fast window calm, and its slow window calm where
    ``slow_held``: everywhere but where the slow window was already in its band (neither hot nor calm) when the
    incident opened (the verdict of the hour it opened in) and has not been hot while it was open.

    The slow window's band is hysteresis for what the slow window fires on: a sustained shift hovering near its
    line is one incident, not one a day. A band that was there before a rise the fast window found is not
    evidence about it: a day of 24 closed hours running 1.12 × its usual neither made that rise nor ends with
    it, and held incidents open for hours after their traffic stopped (BENCHMARKS.md, session s17). A band that
    came with the rise (a model switch's first hour at its new price: not calm, not yet hot) is the rise's, and
    holds: released, the switch resolved and paged again an hour later. A slow window hot now holds every
    incident (``hot`` is the fast or the slow window's): an incident it holds is one it would open again."""
    return fast_calm & (slow_calm | ~slow_held)


@dataclass(frozen=True)
class SpendVerdict:
    hot: np.ndarray
    very_hot: np.ndarray
    calm: np.ndarray
    excess_usd: np.ndarray     # observed - expected (the larger of the mean and the typical peak)
    expected_usd: np.ndarray
    # the slow window's: hot and calm by the day's median alone, without the price test (None: the fast window's)
    median_hot: np.ndarray | None = None
    median_calm: np.ndarray | None = None


@dataclass(frozen=True)
class PriceShift:
    """Per subject: the last ``hours`` at a new price (0: none), dollars per request usual and observed over them,
    and the dollars above what those requests usually cost (:meth:`SpendAnomalyRule.price_shift`)."""

    hours: np.ndarray
    usual_per_request: np.ndarray
    per_request: np.ndarray
    excess_usd: np.ndarray


@dataclass(frozen=True)
class SpendAnomalyRule:
    window_minutes: int = 10
    z_fire: float = 4.0
    z_calm: float = 2.0
    min_ratio: float = 1.5
    peak_margin: float = 1.25
    min_excess_usd: float = 1.0
    very_hot_factor: float = 1.1
    far_over_factor: float = 2.0  # a window this far over its line fires at once with the minimum excess
    short_minutes: int = 5        # the last minutes that can make a hot subject very hot (0: not read)
    min_requests: int = 5
    warmup_hours: int = 7 * 24
    slow_ratio: float = 1.15
    slow_calm_ratio: float = 1.1
    slow_min_requests: float = 20.0
    slow_min_hours: int = 12
    slow_min_excess_usd: float = 20.0
    slow_sustained_ratio: float = 1.05   # a previous day whose median ratio was this: growth, not a day's wobble
    slow_sustained_min_usd: float = 10.0  # a day over after a day over: the least excess worth a warning
    slow_z_excess: float = 4.0           # ... and this many of the day's own standard deviations
    slow_hour_cap: float = 2.0
    page_usd_per_hour: float = 25.0
    new_spender_usd: float = 20.0
    day_peak_for: str = "pairs"   # whose peak is at least its usual busiest 10 minutes of a day: pairs, all, none
    pair_min_ratio: float = 2.0
    day_peak_share: float = 0.6   # of a pair's usual busiest 10 minutes of a day that its window must beat
    price_hours: int = 2          # consecutive closed hours at a new price (:meth:`price`) that make it hot

    def peak(self, hour_peak: np.ndarray, day_peak: np.ndarray | None, *, pair: np.ndarray) -> np.ndarray:
        """The typical 10-minute peak a subject's window is held against: this hour's (of the week), or for the
        subjects ``day_peak_for`` names the larger of it and the usual busiest 10 minutes of a day."""
        if day_peak is None or self.day_peak_for == "none":
            return hour_peak
        applies = pair if self.day_peak_for == "pairs" else np.ones_like(pair, dtype=bool)
        return np.where(applies, np.maximum(hour_peak, self.day_peak_share * day_peak), hour_peak)

    def tail(self, expected: Expectation, observed_requests: np.ndarray) -> np.ndarray:
        """The dollars beyond which a window is as rare as a normal beyond ``z_fire`` standard deviations.

        A window's dollars are a compound sum, a negative-binomial count of requests times right-skewed
        request sizes, and either can be what moved:

        - the sizes, or both: the dollars beyond the gamma of the window's mean and variance
          (:func:`~spendstream.detect.noise.upper`; its shape, expected requests / (1 + size cv² + phi ×
          expected requests), carries the skew of the sizes);
        - the count: more requests than the count's own tail allows
          (:func:`~spendstream.detect.noise.count_upper`), costing at least what that many requests cost at
          the usual size. The gamma cannot see this where one request is usual: twelve calls where one is
          usual, at the usual size, sit inside its long tail, yet by the count they are a one-in-a-billion window.

        Under the model each way is a tail of probability about that of ``z_fire`` (the count's bounds the
        second: it needs the count beyond its tail), so a window is hot by chance at most about twice as often
        as by either alone: a z of 3.85 instead of 4.
        """
        by_size = upper(expected.cost, expected.sigma, self.z_fire)
        count_line = count_upper(expected.requests, expected.dispersion, self.z_fire)
        per_request = np.where(expected.requests > 0, expected.cost / np.maximum(expected.requests, 1e-9), 0.0)
        return np.where(observed_requests >= count_line, np.minimum(by_size, per_request * count_line), by_size)

    def fast(self, expected: Expectation, *, observed_usd: np.ndarray, observed_requests: np.ndarray,
             history_hours: np.ndarray, pair: np.ndarray | None = None, short: Expectation | None = None,
             short_usd: np.ndarray | None = None, short_requests: np.ndarray | None = None,
             dearest_usd: np.ndarray | None = None) -> SpendVerdict:
        """``expected.peak`` is :meth:`peak`'s; ``pair`` marks the feature × customer subjects. ``short`` is
        what the last ``short_minutes`` should hold (:func:`~spendstream.detect.noise.expect` over them: its
        peak is still the 10-minute one), ``short_usd`` and ``short_requests`` what they held; without them
        the short window is not judged.

        ``dearest_usd``: the dollars of each window's dearest request, when counted. A window hot only by its
        dearest request (not hot without it) is not hot, nor calm: one request is not a rise. Session s24's
        outside evaluation, code trace: three of its four noise pages were one request of 150k–255k output tokens
        ($1.5–3.1), longer than anything the customer or feature had sent in nine days, seen by two passes in a
        row; the trace holds about one such request a day somewhere in the traffic, which no key's own history
        can expect."""
        hot, very_hot, excess = self._judge(expected, observed_usd, observed_requests, history_hours, pair)
        if dearest_usd is not None:  # (a hot window is never calm: its line is above the calm one)
            without, _, _ = self._judge(expected, observed_usd - dearest_usd, np.maximum(observed_requests - 1, 0),
                                        history_hours, pair)
            hot, very_hot = hot & without, very_hot & without
        if short is not None and short_usd is not None and short_requests is not None:
            share = replace(short, peak=short.peak * self.short_minutes / self.window_minutes)
            _, far_over, _ = self._judge(share, short_usd, short_requests, history_hours, pair)
            very_hot = very_hot | (hot & far_over)
        calm = observed_usd < np.maximum(expected.cost + self.z_calm * expected.sigma, expected.peak)
        return SpendVerdict(hot, very_hot, calm, excess, expected.cost)

    def line(self, expected: Expectation, observed_requests: np.ndarray, pair: np.ndarray | None = None
             ) -> np.ndarray:
        """The dollars a window must reach to be hot (with the excess and the requests): the largest of its
        :meth:`tail`, the minimum ratio × expected and ``peak_margin`` × the typical peak."""
        min_ratio = self.min_ratio if pair is None else np.where(pair, self.pair_min_ratio, self.min_ratio)
        return np.maximum.reduce([self.tail(expected, observed_requests), min_ratio * expected.cost,
                                  self.peak_margin * expected.peak])

    def _judge(self, expected: Expectation, observed_usd: np.ndarray, observed_requests: np.ndarray,
               history_hours: np.ndarray, pair: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Hot, very hot and the excess of one window."""
        usual = np.maximum(expected.cost, expected.peak)
        threshold = self.line(expected, observed_requests, pair)
        excess = observed_usd - usual
        warm = history_hours >= self.warmup_hours
        hot = (warm & (observed_usd >= threshold) & (excess >= self.min_excess_usd)
               & (observed_requests >= self.min_requests))
        very_hot = hot & (((observed_usd >= self.very_hot_factor * threshold) & (excess >= 2 * self.min_excess_usd))
                          | (observed_usd >= self.far_over_factor * threshold))
        return hot, very_hot, excess

    def could_fire(self, *, observed_usd: np.ndarray, observed_requests: np.ndarray) -> np.ndarray:
        """Whether ``fast`` can make a subject hot, from its window alone (expected dollars are never negative,
        so the excess is at most what was observed): the pass reads no baseline for the others."""
        return (observed_usd >= self.min_excess_usd) & (observed_requests >= self.min_requests)

    def price(self, *, per_request: np.ndarray, cv2: np.ndarray | float, observed_requests: np.ndarray,
              z: float) -> tuple[np.ndarray, np.ndarray]:
        """What ``observed_requests`` requests usually cost, at ``per_request`` dollars each, and the dollars
        beyond which they cost more than their sizes explain: the gamma tail at ``z`` of that many requests'
        costs (squared cv ``cv2`` each: :attr:`~spendstream.detect.noise.Profiles.price_cv2`), and at least
        ``min_ratio`` × the usual, as the fast window's dollars. Without a usual price (0) the line is infinite.

        The count is observed, not expected: its noise and the subject's bursts drop out, so a burst of
        ordinary requests is not over this line however bursty the subject, and a new price is. ``cv2`` is
        the subject's own: one model's requests wander with their sizes, a feature routed to several models
        with its mix as well."""
        n = np.asarray(observed_requests, dtype=float)
        usual = per_request * n
        line = np.maximum(upper(usual, per_request * np.sqrt(n * cv2), z), self.min_ratio * usual)
        return usual, np.where(per_request > 0, line, np.inf)

    def slow(self, *, observed_usd: np.ndarray, expected_usd: np.ndarray, expected_requests: np.ndarray,
             history_hours: np.ndarray, dispersion: np.ndarray | float = 0.0,
             previous_usd: np.ndarray | None = None, previous_expected_usd: np.ndarray | None = None,
             previous_expected_requests: np.ndarray | None = None, observed_requests: np.ndarray | None = None,
             per_request: np.ndarray | None = None, price_cv2: np.ndarray | float = SIZE_CV2) -> SpendVerdict:
        """Arrays of shape (subjects, 24): the last 24 closed hours, observed and as the profile expected them;
        ``dispersion`` is each subject's phi (:class:`~spendstream.detect.noise.Profiles`; 0: Poisson counts).
        ``observed_requests`` (those hours' requests) and ``per_request`` (the usual dollars per request of
        the last ``price_hours`` hours, (subjects, ``price_hours``)), when given, judge those hours by their
        price too (:meth:`price`, with each subject's ``price_cv2``): hot when each is over its line at
        ``z_fire``, calm when the last is under it at ``z_calm``; their excess over what their requests
        usually cost is the verdict's when larger than the day's.

        ``previous_*`` are the 24 hours before those, when read: a subject whose previous day's median ratio was
        at least ``slow_sustained_ratio`` as well is growing, not wobbling for a day, and its day's excess need
        only clear its own noise (``slow_z_excess`` × :meth:`day_sigma`, at least ``slow_sustained_min_usd``)
        instead of ``slow_min_excess_usd``: a creep of 15 % a day on a customer of $60 a day is $14 over on its
        second day. (A median ratio, not the previous day's excess: the profile's dollars are medians, under a
        bursty subject's mean, so its days are over them by a little most days.)"""
        median, enough = self._median_ratio(observed_usd, expected_usd, expected_requests)
        day_expected = expected_usd.sum(axis=1)
        excess = np.minimum(observed_usd, self.slow_hour_cap * expected_usd).sum(axis=1) - day_expected
        floor = np.full(excess.shape, self.slow_min_excess_usd)
        if previous_usd is not None and previous_expected_usd is not None and previous_expected_requests is not None:
            before, known = self._median_ratio(previous_usd, previous_expected_usd, previous_expected_requests)
            noise = np.maximum(self.slow_sustained_min_usd,
                               self.slow_z_excess * self.day_sigma(expected_usd, expected_requests, dispersion))
            floor = np.where(known & (before >= self.slow_sustained_ratio), np.minimum(floor, noise), floor)
        warm = history_hours >= self.warmup_hours
        hot = warm & enough & (median >= self.slow_ratio) & (excess >= floor)
        calm = median < self.slow_calm_ratio
        median_hot, median_calm = hot, calm
        if observed_requests is not None and per_request is not None:
            k = self.price_hours
            n, spent = observed_requests[:, -k:], observed_usd[:, -k:]
            cv2 = np.asarray(price_cv2, dtype=float)
            cv2 = np.broadcast_to(cv2[:, None] if cv2.ndim == 1 else cv2, n.shape)
            usual, line = self.price(per_request=per_request, cv2=cv2, observed_requests=n, z=self.z_fire)
            over = (spent >= line) & (spent - usual >= self.min_excess_usd) & (n >= self.min_requests)
            priced = warm & over.all(axis=1)
            _, calm_line = self.price(per_request=per_request[:, -1], cv2=cv2[:, -1], observed_requests=n[:, -1],
                                      z=self.z_calm)
            hot, calm = hot | priced, calm & (spent[:, -1] < np.maximum(calm_line, self.min_excess_usd))
            excess = np.where(priced, np.maximum(excess, (spent - usual).sum(axis=1)), excess)
        return SpendVerdict(hot, np.zeros_like(hot), calm, excess, day_expected, median_hot, median_calm)

    def price_shift(self, *, observed_usd: np.ndarray, observed_requests: np.ndarray, per_request: np.ndarray,
                    price_cv2: np.ndarray | float = SIZE_CV2) -> PriceShift:
        """What a page says of a new price: over the last hours in a row (subjects × hours, oldest first) whose dollars
        are over what their requests usually cost at ``z_calm`` (:meth:`price`'s line; the one a subject at a new price
        is calm under), their usual and their observed dollars per request, and the dollars above the usual.

        Hours with fewer than ``min_requests`` requests (a night) neither end the run nor count in it; an hour at the
        usual price ends it, so "since" is when the price moved, to the hour. 0 hours: the last counted is not over."""
        n = np.asarray(observed_requests, dtype=float)
        cv2 = np.asarray(price_cv2, dtype=float)
        cv2 = np.broadcast_to(cv2[:, None] if cv2.ndim == 1 else cv2, n.shape)
        usual, line = self.price(per_request=per_request, cv2=cv2, observed_requests=n, z=self.z_calm)
        over = observed_usd >= line
        run, since = np.ones(len(n), dtype=bool), np.full(len(n), n.shape[1])
        for k in range(n.shape[1] - 1, -1, -1):
            counted = n[:, k] >= self.min_requests
            run &= ~counted | over[:, k]
            since = np.where(run & counted, k, since)
        taken = np.arange(n.shape[1]) >= since[:, None]
        requests = np.maximum((n * taken).sum(axis=1), 1e-9)
        was, now = (usual * taken).sum(axis=1), (observed_usd * taken).sum(axis=1)
        return PriceShift(n.shape[1] - since, was / requests, now / requests, np.maximum(now - was, 0.0))

    def price_back(self, *, price_hours: np.ndarray, usual_per_request: np.ndarray, per_request: np.ndarray,
                   observed_usd: np.ndarray, observed_requests: np.ndarray, seen_back: np.ndarray | None = None
                   ) -> np.ndarray:
        """Where the last closed hours ran at a new price (``price_hours`` > 0, :meth:`price_shift`, at
        ``usual_per_request`` dollars a request as usual), whether the new price is over by the current window's
        requests. Its first sign (``seen_back`` False: not yet seen since the run at the new price began): at
        least ``min_requests`` requests, their dollars under :meth:`price`'s line at ``z_calm`` (the line a closed
        hour is price-calm under; the size spread of a request, ``SIZE_CV2``: the hour's baselines keep no other)
        or under ``min_excess_usd`` over. Once seen, it stays over until a window of ``min_requests`` or more is
        over that line at ``z_fire`` (as the price test fires): the same hysteresis as the closed hours' test.

        The closed hours lag a price by up to two hours: a model switch that ended at 14:10 keeps 13:00 and 14:00
        over their line until 16:00's refresh, and its slow window hot or not calm as long. Where the window's
        own requests cost what they usually do, the rise the slow window found is over. Judged at ``z_calm`` both
        ways, a window of ordinary requests a little heavy (one pass in twenty or so) or too few to price (a
        night) lit the stale hours again and paged the switch a second time."""
        n = np.asarray(observed_requests, dtype=float)
        counted = (price_hours > 0) & (n >= self.min_requests)
        usual, calm_line = self.price(per_request=usual_per_request, cv2=SIZE_CV2, observed_requests=n,
                                      z=self.z_calm)
        # and under what they would cost at the new price (``per_request``), less ``z_calm`` deviations of that
        # many requests' costs: a few requests at either price are not told apart, and a part of a subject moved
        # to a new model is not over because one window of it ran light
        at_new = per_request * n
        lower = at_new - self.z_calm * per_request * np.sqrt(n * SIZE_CV2)
        back = (counted & (observed_usd < np.maximum(calm_line, usual + self.min_excess_usd))
                & (observed_usd < lower))
        if seen_back is None:
            return back
        _, hot_line = self.price(per_request=usual_per_request, cv2=SIZE_CV2, observed_requests=n, z=self.z_fire)
        still = counted & (observed_usd >= hot_line) & (observed_usd - usual >= self.min_excess_usd)
        return np.where(seen_back, (price_hours > 0) & ~still, back)

    def _median_ratio(self, observed_usd: np.ndarray, expected_usd: np.ndarray,
                      expected_requests: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The median of observed ÷ expected dollars over the hours where ``slow_min_requests`` were expected
        (1 where fewer than ``slow_min_hours`` were), and whether there were enough."""
        counted = expected_requests >= self.slow_min_requests
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(counted, observed_usd / np.where(expected_usd > 0, expected_usd, np.nan), np.nan)
        enough = counted.sum(axis=1) >= self.slow_min_hours
        with warnings.catch_warnings():  # a subject expected to cost $0 every hour (unpriced) has no ratio:
            warnings.simplefilter("ignore", RuntimeWarning)  # its median is NaN, so never hot
            median = np.where(enough, np.nanmedian(np.where(enough[:, None], ratio, 0.0), axis=1), 1.0)
        return median, enough

    @staticmethod
    def day_sigma(expected_usd: np.ndarray, expected_requests: np.ndarray,
                  dispersion: np.ndarray | float = 0.0) -> np.ndarray:
        """The standard deviation of a day's dollars under the count model, hours independent: each hour a
        negative-binomial count (phi ``dispersion``) of requests of the hour's mean size, cv² ``SIZE_CV2``."""
        req = np.asarray(expected_requests, dtype=float)
        per_request = np.where(req > 0, expected_usd / np.maximum(req, 1e-9), 0.0)
        phi = np.asarray(dispersion, dtype=float)
        phi = phi[:, None] if phi.ndim == 1 else phi
        variance = per_request ** 2 * (req * (1 + SIZE_CV2) + phi * req ** 2)
        return np.sqrt(variance.sum(axis=1))

    def severity(self, excess_usd: float, *, fast: bool) -> str:
        per_hour = excess_usd * 60 / self.window_minutes
        return "error" if fast and per_hour >= self.page_usd_per_hour else "warning"
