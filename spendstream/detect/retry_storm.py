"""Retry storms per feature and per customer — storms, slow burns, agent loops — and what they cost.

The decisions are :class:`~spendstream.detect.storm.RetryStormRule`'s; the incident's life is
:class:`~spendstream.detect.incidents.Hysteresis`'s (one incident per subject until it
resolves). Every pass reads, from raw ``usage_events FINAL`` (a time range of a table sorted
by time: it costs what the window holds):

- the last ``slow_minutes`` per subject and provider: attempts and failures in the fast
  window and in the whole slow one, the longest request, the billed failed attempts, and
  the error mix (429, 5xx, timeouts, invalid output) for the message;
- the last ``window_minutes`` per request shape (feature, customer, prompt-prefix
  fingerprint, model, input size): how many distinct requests repeated one shape, and what
  the repeats beyond the first cost;

and each subject's own failure ratio from this hour's baselines (:mod:`spendstream.detect.baseline`).
Storms and slow burns need a day of history (no page on a fresh store); loops do not.
The message states the dollars wasted: billed failed attempts plus repeated calls.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import numpy as np

from spendstream.detect import baseline, state
from spendstream.detect.incidents import Hysteresis
from spendstream.detect.storm import RetryStormRule
from spendstream.schemas.alert import Alert
from spendstream.sinks.store import Store, TextQuerier, query_result, sql_time

KIND = "retry_storm"
STORM_WARMUP_HOURS = 24
_SUBJECTS = "arrayJoin([concat('feature=', ifNull(feature, '')), concat('customer=', ifNull(customer, ''))])"


def recent_failures(querier: TextQuerier, *, now: datetime, window: timedelta, slow: timedelta) -> list[dict]:
    """Per subject and provider: the fast window's and the slow window's attempts and failures, and the rest."""
    return query_result(querier, f"""
        SELECT subject, ifNull(provider, '') AS provider,
               toFloat64(countIf(ts >= {{w:DateTime64(3, 'UTC')}})) AS attempts,
               toFloat64(countIf(ts >= {{w:DateTime64(3, 'UTC')}} AND status != 'ok')) AS failed,
               toFloat64(count()) AS slow_attempts, toFloat64(countIf(status != 'ok')) AS slow_failed,
               toFloat64(maxIf(attempt, ts >= {{w:DateTime64(3, 'UTC')}})) AS max_attempt,
               toFloat64(sumIf(ifNull(total_cost, 0), status != 'ok' AND priced)) AS failed_cost,
               countIf(ts >= {{w:DateTime64(3, 'UTC')}} AND (status = 'rate_limited' OR http_status = 429))
                   AS rate_limited,
               countIf(ts >= {{w:DateTime64(3, 'UTC')}} AND http_status >= 500) AS server_errors,
               countIf(ts >= {{w:DateTime64(3, 'UTC')}} AND status = 'timeout') AS timeouts,
               countIf(ts >= {{w:DateTime64(3, 'UTC')}} AND status = 'invalid_output') AS invalid_outputs
        FROM (SELECT {_SUBJECTS} AS subject, * FROM usage_events FINAL
              WHERE ts >= {{s:DateTime64(3, 'UTC')}} AND ts < {{n:DateTime64(3, 'UTC')}})
        WHERE NOT endsWith(subject, '=') GROUP BY subject, provider""",
                        {"s": sql_time(now - slow), "w": sql_time(now - window), "n": sql_time(now)}).dicts()


def repeated_shapes(querier: TextQuerier, *, start: datetime, end: datetime) -> dict[str, tuple[float, float]]:
    """Per subject: (the most distinct requests of one shape, USD of the repeats beyond each shape's first)."""
    rows = query_result(querier, f"""
        SELECT subject, max(n), sum(repeated) FROM (
            SELECT {_SUBJECTS} AS subject, n, repeated FROM (
                SELECT feature, customer, toFloat64(uniqExact(ifNull(request_id, event_id))) AS n,
                       toFloat64(sum(ifNull(total_cost, 0))) * (n - 1) / n AS repeated
                FROM usage_events FINAL
                WHERE ts >= {{a:DateTime64(3, 'UTC')}} AND ts < {{b:DateTime64(3, 'UTC')}} AND attempt = 1
                GROUP BY feature, customer, ifNull(prefix_fingerprint, ''), model, input_tokens
                HAVING n >= 2))
        WHERE NOT endsWith(subject, '=') GROUP BY subject""", {"a": sql_time(start), "b": sql_time(end)}).rows
    return {s: (float(n), float(usd)) for s, n, usd in rows}


def detect_retry_storms(store: Store, now: datetime, *, rule: RetryStormRule | None = None,
                        hysteresis: Hysteresis | None = None) -> list[Alert]:
    """Alerts to store now (storms firing or resolved); the incidents' state is saved."""
    rule, hysteresis = rule or RetryStormRule(), hysteresis or Hysteresis()
    window, slow = timedelta(minutes=rule.window_minutes), timedelta(minutes=rule.slow_minutes)
    rows = recent_failures(store, now=now, window=window, slow=slow)
    loops = repeated_shapes(store, start=now - window, end=now)
    incidents = state.load_open(store, [KIND])
    known = baseline.load(store, now, subjects={r["subject"] for r in rows} | set(loops) | {s for _, s in incidents})
    own_of = dict(zip(known.subjects, known.fail_ratio, strict=True))
    history_of = dict(zip(known.subjects, known.history_hours, strict=True))
    subjects = sorted({r["subject"] for r in rows} | set(loops) | {s for _, s in incidents})
    providers = sorted({r["provider"] for r in rows})
    si, pi = {s: i for i, s in enumerate(subjects)}, {p: i for i, p in enumerate(providers)}
    shape = (len(subjects), max(len(providers), 1))
    a, f, sa, sf = (np.zeros(shape) for _ in range(4))
    longest, wasted = np.zeros(len(subjects)), np.zeros(len(subjects))
    mix: dict[str, list[int]] = {s: [0, 0, 0, 0] for s in subjects}
    for r in rows:
        i, p = si[r["subject"]], pi[r["provider"]]
        a[i, p], f[i, p], sa[i, p], sf[i, p] = r["attempts"], r["failed"], r["slow_attempts"], r["slow_failed"]
        longest[i] = max(longest[i], r["max_attempt"] or 0)
        wasted[i] += r["failed_cost"]
        mix[r["subject"]] = [m + int(r[k]) for m, k in zip(mix[r["subject"]], (
            "rate_limited", "server_errors", "timeouts", "invalid_outputs"), strict=True)]
    repeats = np.array([loops.get(s, (0.0, 0.0))[0] for s in subjects])
    repeated_usd = np.array([loops.get(s, (0.0, 0.0))[1] for s in subjects])
    own = np.array([own_of.get(s, 0.0) for s in subjects])
    verdict = rule.judge(failed=f, attempts=a, own_ratio=own, slow_failed=sf, slow_attempts=sa, max_attempt=longest,
                         repeats=repeats)
    warm = np.array([history_of.get(s, 0) >= STORM_WARMUP_HOURS for s in subjects], dtype=bool)
    loop = (longest >= rule.loop_attempts) | (repeats >= rule.loop_repeats)
    hot, very_hot = verdict.hot & (warm | loop), verdict.very_hot & (warm | loop)
    alerts, changes = [], []
    for subject in subjects:
        i = si[subject]
        before = incidents.get((KIND, subject))
        if before is None and not hot[i]:
            continue
        after, transition = hysteresis.step(before, kind=KIND, subject=subject, hot=bool(hot[i]),
                                            very_hot=bool(very_hot[i]), calm=bool(verdict.calm[i]),
                                            onset=now - window, severity="error", observed=float(verdict.z[i]),
                                            wasted_usd=0.0)
        changes.append(((KIND, subject), before, after))
        if transition is not None:
            incident = after or before
            failed, attempts = f[i].sum(), a[i].sum()
            usd = float(wasted[i] + repeated_usd[i])
            rl, server, timeouts, invalid = mix[subject]
            text = (f"{int(failed)} failed of {int(attempts)} attempts in the last {rule.window_minutes} min "
                    f"({failed / max(attempts, 1):.0%}, expected {verdict.expected_ratio[i]:.1%}); "
                    f"{int(sf[i].sum())} failed of {int(sa[i].sum())} in {rule.slow_minutes // 60} h; longest request "
                    f"{int(longest[i])} attempts; most repeated request shape {int(repeats[i])} requests; "
                    f"{rl} rate-limited (429), {server} server errors (5xx), {timeouts} timeouts, {invalid} invalid "
                    f"outputs; ${usd:.2f} wasted on failed attempts and repeated calls in {rule.slow_minutes // 60} h"
                    if transition == "firing" else
                    f"failures back to {failed / max(attempts, 1):.0%} (expected {verdict.expected_ratio[i]:.1%}) "
                    f"in the last {rule.window_minutes} min, no loop")
            alerts.append(Alert(kind=KIND, severity=incident.severity, state=transition, subject=subject,
                                window_start=incident.opened_at, window_end=now,
                                observed=Decimal(f"{failed / max(attempts, 1):.4f}"),
                                expected=Decimal(f"{verdict.expected_ratio[i]:.4f}"), dedup_key=incident.dedup_key,
                                message=text, created_at=now))
    state.save(store, changes, now=now)
    return alerts
