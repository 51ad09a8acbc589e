"""When retries cost money: the decisions of ``retry_storm`` (and its agent loops), pure and vectorised.

Per feature and per customer (and per feature × customer pair: a storm, or the loop its feature and customer
share), every pass, from counts:

- **storm** (the last ``window_minutes``): failed attempts against a binomial around the
  expected failure ratio — the subject's own (learned over its history), or what every
  *other* subject fails at on the same provider right now if that is higher (a provider
  blip fails everyone on it: normal life, not this feature's storm; "right now" is the minutes
  the subject's attempts fell in, where the reader gives them), floored at ``min_ratio``. Hot at
  ``z_fire`` standard deviations with ``min_failed`` failures and ``factor`` × the expected
  ratio, so a quiet feature whose few requests each take five attempts is a storm; and its newest
  ``storm_now_minutes`` (the passes' cadence) not yet calm (``z_calm`` deviations above the expected ratio): two
  passes' windows overlap, so a burst of a few minutes inside the overlap (a provider blip that only the subject's
  own traffic shows, its provider's other traffic too thin to) was hot on both and paged after it had ended —
  the second pass must see the failures go on in minutes the first did not. A quiet key that sent *nothing* in
  its newest minutes is a storm only if it **lasted**: its slow window, before the fast one, failed above the
  usual too (``lasted_failed`` failures at ``lasted_z`` deviations and ``factor`` × the slow window's expected
  ratio). A storm that lasted opens its incident on its first hot pass (very hot), silent now or not: it showed
  itself before this window already. A quiet feature's sparse storm (a few requests retried on and on, silent
  minutes between them) pages on its second burst, on the first pass that sees it (s22); a blip that hit a quiet
  key's few requests and went silent, like a first burst, does not (session s21, measured on the harness's
  ``sparse_quiet_storm`` and ``quiet_blip``). A subject judged on its
  fast window alone (a pair) has no slow window: silent there, it is left to its feature and its customer;
- **slow burn** (the last ``slow_minutes``): the same test over hours with ``z_slow``, for a
  failure ratio that doubles and stays (the last ``window_minutes`` clearly above the usual too:
  a storm that ended stays in the slow window, and one failure of a quiet key is no evidence).
  The reader starts a subject's slow window at the end of its last storm already paged, if that is later
  (:func:`settled` says why): a burn is shown by failures after the storm, not by the storm's own;
- **agent loops**: one request id reaching ``loop_attempts`` attempts, or one request
  shape (prompt-prefix fingerprint, model, input size: whatever the request ids; only
  requests with a fingerprint) repeated ``loop_repeats`` times in the window, or
  ``loop_slow_repeats`` times over the slow window (counting the ten minutes it repeated
  in: an agent calling once a minute for hours), and in either window at least ``loop_share``
  of the subject's attempts there. Templated traffic repeats a shape by chance in proportion
  to its volume: a busy pair's spike of ~3,200 attempts in ten minutes held 14 requests of one
  shape (0.4 %) and was paged as an agent loop (session s22's outside evaluation). Any fires at once.

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
    slow: np.ndarray  # the slow window's test alone (a burn without "still failing now")
    stormed: np.ndarray  # the fast window's own: a storm, or one request retried on and on (its failed attempts)


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
    loop_share: float = 0.02  # ... and this share of the subject's attempts in that window (chance grows with volume)
    # a slow burn must still fail above the usual in the last window_minutes (a storm that ended stays in the
    # slow window): at least this many failures, this z and this factor of the expected ratio
    burn_now_minutes: int | None = None  # for features (None: window_minutes); a customer's is window_minutes
    burn_now_failed: float = 3.0
    burn_now_z: float = 2.0
    burn_now_factor: float = 1.6
    # a storm must still fail in its window's newest minutes (the passes' cadence): see the module's docstring
    storm_now_minutes: int = 5
    # one that sent nothing there must have lasted: its slow window failed above the usual before the fast window
    lasted_failed: float = 3.0
    lasted_z: float = 4.0

    def expected_ratio(self, own: np.ndarray, *, failed: np.ndarray, attempts: np.ndarray,
                       counted: np.ndarray | None = None, others: np.ndarray | None = None) -> np.ndarray:
        """The ratio each subject is held to, from arrays of shape (subjects, providers) for this window.

        Per provider, the subject's own ratio or what all *other* traffic fails at on that provider
        right now, whichever is higher; mixed by the subject's attempts per provider. The provider's
        totals sum the ``counted`` subjects (default all): one kind of subject, say features, counts
        each request once, so a reader need not read every customer's window to know them. A subject
        outside ``counted`` is compared with those totals less its own traffic, which they contain.

        ``others`` (subjects, providers), if given, is what the other traffic failed at *in the minutes this
        subject's attempts fell in* (each minute's ratio weighted by the subject's attempts in it), and
        stands for the window's average: a 2–4 minute provider blip fails a third of everyone's attempts
        then, and a bursty subject that sent most of its ten minutes' attempts inside it fails several times
        the window's average without any storm of its own."""
        if others is None:
            counted = np.ones(len(own), dtype=bool) if counted is None else counted
            others = others_ratio(failed[counted].sum(axis=0)[None, :], attempts[counted].sum(axis=0)[None, :],
                                  failed=failed, attempts=attempts)
        per_provider = np.maximum(np.maximum(own[:, None], others), self.min_ratio)
        total = attempts.sum(axis=1)
        mixed = (per_provider * attempts).sum(axis=1) / np.maximum(total, 1)
        return np.where(total > 0, mixed, np.maximum(own, self.min_ratio))

    def slow_matters(self, *, failed: np.ndarray, attempts: np.ndarray, own_ratio: np.ndarray,
                     max_attempt: np.ndarray, repeats: np.ndarray, counted: np.ndarray | None = None,
                     slow_repeats: np.ndarray | None = None, now_failed: np.ndarray | None = None,
                     now_attempts: np.ndarray | None = None, others: np.ndarray | None = None,
                     now_others: np.ndarray | None = None) -> np.ndarray:
        """Per subject, from the fast window alone: whether its slow window can change its verdict (a burn
        must still fail above the usual now, and a storm is one) or be stated in its message (a loop).
        Another subject's slow window is read by no decision of ``judge`` but the providers' totals,
        which sum the ``counted`` subjects (so those are always needed). ``others``, ``now_others``: as
        ``judge``'s."""
        p = self.expected_ratio(own_ratio, failed=failed, attempts=attempts, counted=counted, others=others)
        f, a = failed.sum(axis=1), attempts.sum(axis=1)
        return (self._guard(now_failed, now_attempts, f, a, p, own_ratio, counted, now_others)
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

    def can_storm(self, failed: np.ndarray | float) -> np.ndarray | bool:
        """Whether a subject judged on its fast window alone (a feature x customer pair: no slow window, no
        loop of its own) can be hot: a storm needs ``min_failed`` failures there."""
        return np.asarray(failed) >= self.min_failed

    def lasted(self, failed: np.ndarray, attempts: np.ndarray, p: np.ndarray) -> np.ndarray:
        """Per subject, from its failed attempts and attempts before its fast window (within the slow window) and
        the ratio it is held to there: whether it failed clearly above the usual then too."""
        ratio = np.where(attempts > 0, failed / np.maximum(attempts, 1), 0.0)
        return (failed >= self.lasted_failed) & (_z(failed, attempts, p) >= self.lasted_z) & (ratio >= self.factor * p)

    def looping(self, max_attempt: np.ndarray, repeats: np.ndarray, slow_repeats: np.ndarray | None, *,
                attempts: np.ndarray | None = None, slow_attempts: np.ndarray | None = None) -> np.ndarray:
        """Per subject: an agent loop (one request retried on and on, or one request shape repeated).
        ``attempts``/``slow_attempts``: the subject's attempts in the fast and the slow window, which a shape's
        repeats must be ``loop_share`` of (not given: not asked; a candidate's test, judged again with them)."""
        shaped = repeats >= np.maximum(self.loop_repeats, self.loop_share * (0 if attempts is None else attempts))
        slow = (slow_repeats >= np.maximum(self.loop_slow_repeats,
                                           self.loop_share * (0 if slow_attempts is None else slow_attempts))
                if slow_repeats is not None else False)
        return (max_attempt >= self.loop_attempts) | shaped | slow

    def loop_volume(self, attempts: np.ndarray, slow_attempts: np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`looping`'s ``attempts`` and ``slow_attempts`` from a subject's fast and slow windows (summed over
        providers). The slow window's is at least the fast window's at its rate: a pair has no slow window (0), and
        a busy pair's two hours of chance repeats (46 of one shape in ~12,500 attempts in s23's outside evaluation)
        passed ``loop_slow_repeats`` against nothing."""
        return {"attempts": attempts,
                "slow_attempts": np.maximum(slow_attempts, attempts * self.slow_minutes / self.window_minutes)}

    def _guard(self, now_failed: np.ndarray | None, now_attempts: np.ndarray | None, f: np.ndarray, a: np.ndarray,
               p: np.ndarray, own: np.ndarray, counted: np.ndarray | None,
               now_others: np.ndarray | None = None) -> np.ndarray:
        if now_failed is None or now_attempts is None:
            return self._burning_now(f, a, p)
        p_now = self.expected_ratio(own, failed=now_failed, attempts=now_attempts, counted=counted, others=now_others)
        return self._burning_now(now_failed.sum(axis=1), now_attempts.sum(axis=1), p_now)

    def _burning_now(self, f: np.ndarray, a: np.ndarray, p: np.ndarray) -> np.ndarray:
        ratio = np.where(a > 0, f / np.maximum(a, 1), 0.0)
        return (_z(f, a, p) >= self.burn_now_z) & (f >= self.burn_now_failed) & (ratio >= self.burn_now_factor * p)

    def judge(self, *, failed: np.ndarray, attempts: np.ndarray, own_ratio: np.ndarray,
              slow_failed: np.ndarray, slow_attempts: np.ndarray, max_attempt: np.ndarray,
              repeats: np.ndarray, counted: np.ndarray | None = None,
              slow_repeats: np.ndarray | None = None,
              now_failed: np.ndarray | None = None, now_attempts: np.ndarray | None = None,
              others: np.ndarray | None = None, now_others: np.ndarray | None = None,
              slow_others: np.ndarray | None = None, latest_failed: np.ndarray | None = None,
              latest_attempts: np.ndarray | None = None) -> StormVerdict:
        """``failed``/``attempts`` (and the slow window's) per subject and provider: shape (subjects, providers);
        ``counted``: the subjects whose sums are the providers' totals (see ``expected_ratio``);
        ``slow_repeats``: the most requests of one shape over the slow window, in periods it repeated in;
        ``now_failed``/``now_attempts``: per subject and provider, the window a slow burn must still fail in
        (default: the last ``window_minutes``); ``others``/``now_others``: what the other traffic failed at in the
        minutes of the subject's attempts in the fast window and in that one (see ``expected_ratio``; default:
        the window's average); ``slow_others``: what the other traffic failed at over each subject's slow window
        (:func:`others_ratio`), where those windows differ (a subject's starts after its storm, :func:`settled`;
        default: from the ``counted`` subjects' slow windows); ``latest_failed``/``latest_attempts``: per subject
        and provider, the fast window's newest ``storm_now_minutes``, where a storm must not be calm yet and, if it
        sent nothing there, must have lasted (its slow window less its fast one; default: not asked)."""
        p = self.expected_ratio(own_ratio, failed=failed, attempts=attempts, counted=counted, others=others)
        f, a = failed.sum(axis=1), attempts.sum(axis=1)
        z = _z(f, a, p)
        ratio = np.where(a > 0, f / np.maximum(a, 1), 0.0)
        storm = (z >= self.z_fire) & (f >= self.min_failed) & (ratio >= self.factor * p)
        p_slow = self.expected_ratio(own_ratio, failed=slow_failed, attempts=slow_attempts, counted=counted,
                                     others=slow_others)
        sf, sa = slow_failed.sum(axis=1), slow_attempts.sum(axis=1)
        lasted = self.lasted(np.maximum(sf - f, 0), np.maximum(sa - a, 0), p_slow)
        if latest_failed is not None and latest_attempts is not None:  # not calm in the newest minutes
            # a key that sent nothing there has shown only its window's older minutes, which the pass before saw too
            # (a blip inside the overlap): it must have failed before this window as well (a sparse storm's
            # earlier bursts), as far as its slow window tells (none: a pair's, or one judged since its storm)
            latest_a = latest_attempts.sum(axis=1)
            storm &= np.where(latest_a == 0, lasted, _z(latest_failed.sum(axis=1), latest_a, p) >= self.z_calm)
        slow_ratio = np.where(sa > 0, sf / np.maximum(sa, 1), 0.0)
        # still going: the last minutes fail above the usual too (a storm that ended stays in the slow window)
        slow = (_z(sf, sa, p_slow) >= self.z_slow) & (sf >= self.slow_min_failed) & (slow_ratio >= self.slow_factor
                                                                                        * p_slow)
        burn = slow & self._guard(now_failed, now_attempts, f, a, p, own_ratio, counted, now_others)
        loop = self.looping(max_attempt, repeats, slow_repeats, **self.loop_volume(a, sa))
        hot = storm | burn | loop
        # a storm that lasted failed above the usual before this window too, on an earlier pass: waiting for a second
        # hot pass would only wait for its next burst (a sparse storm's bursts can be many minutes apart)
        very_hot = loop | (storm & (((z >= self.z_very) & (f >= 2 * self.min_failed)) | lasted))
        calm = (z < self.z_calm) & ~loop & ~burn
        return StormVerdict(hot, very_hot, calm, p, z, slow, storm | (max_attempt >= self.loop_attempts))


def settled(verdict: StormVerdict) -> np.ndarray:
    """Per subject: calm toward a resolve. An open incident counts no pass calm while its slow window still burns:
    a slow burn's "still failing now" test flips with a few failures either way, and each flip after three calm
    passes was a resolve and a new page.

    A storm's failed attempts would hold it the same way for ``slow_minutes`` after it ends (session s14: resolves
    about two hours late), and once it resolved they re-opened the subject as a burn on the storm's own failures (a
    second page for one storm). So the pass judges a subject's slow window from the end of its last storm already
    paged (``stormed`` on a pass its incident fires; a pair's storm ends its feature's and its customer's, whose
    windows hold its failures): a storm resolves once its fast window is calm, and a burn after it must be shown by
    new failures. A burn that never stormed keeps its whole slow window and is held while it burns."""
    return verdict.calm & ~verdict.slow


def others_ratio(total_failed: np.ndarray, total_attempts: np.ndarray, *, failed: np.ndarray,
                 attempts: np.ndarray) -> np.ndarray:
    """(subjects, providers): what the other traffic failed at on each provider, from the providers' totals over
    each subject's window (shaped to broadcast against ``failed``) less the subject's own ``failed``/``attempts``
    there, which they contain."""
    others_attempts = total_attempts - attempts
    return np.where(others_attempts > 0, np.maximum(total_failed - failed, 0) / np.maximum(others_attempts, 1), 0.0)


def _z(failed: np.ndarray, attempts: np.ndarray, p: np.ndarray) -> np.ndarray:
    sd = np.sqrt(np.maximum(attempts * p * (1 - p), 1e-12))
    return np.where(attempts > 0, (failed - attempts * p) / sd, 0.0)
