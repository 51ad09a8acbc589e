"""The evaluation harness (bench/detector_eval) does not flatter: independent bursts, real incidents, controls."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from bench.detector_eval import quiet_keys, rules
from bench.detector_eval.traces import SHAPES, load
from bench.detector_eval.traffic import (
    BUSY_CONTROL,
    CONTROLS,
    DAY,
    EVAL_START,
    EXTRA_CONTROLS,
    KINDS,
    MONTHLY_CONTROL,
    MONTHLY_RUNS,
    QUIET_BLIP_CONTROLS,
    SPARSE_STORM_KEYS,
    generate,
)
from spendstream.detect.storm import RetryStormRule

_ARRAYS = ("requests", "attempts", "failed", "cost", "failed_cost", "max_attempt", "repeats")


@pytest.fixture(scope="module")
def world():
    return generate(load("code"), seed=7)


@pytest.mark.parametrize("shape", SHAPES)
def test_every_trace_gives_a_burst_shape_and_request_sizes(shape: str) -> None:
    trace = load(shape)
    assert len(trace.per_minute) >= 17 and abs(trace.per_minute.mean() - 1) < 1e-9
    assert len(trace.input_tokens) == len(trace.output_tokens) > 3000


def test_no_hour_is_a_copy_of_another(world) -> None:
    # the flattering harness tiled one hour: every lookback window saw the same bursts
    busiest = world.requests[0, :7 * DAY].reshape(-1, 60)
    same = sum(np.array_equal(busiest[h], busiest[h + 24]) for h in range(len(busiest) - 24))
    assert same == 0


def test_incidents_land_in_the_evaluated_week_and_controls_run_every_day(world) -> None:
    assert sorted(i.kind for i in world.incidents) == sorted(
        [k for k, n in KINDS for _ in range(n)] + ["sparse_quiet_storm"] * len(SPARSE_STORM_KEYS))
    assert all(EVAL_START <= i.start < i.end <= world.minutes for i in world.incidents)
    nightly = world.leaves.index(next(leaf for leaf in world.leaves if leaf.feature == CONTROLS[0][1]))
    per_day = world.requests[nightly].reshape(-1, DAY).sum(axis=1)
    assert (per_day > 300).all()  # the 02:00 job, in history too


def test_the_busy_key_bursts_every_day_and_the_monthly_job_runs_once_in_history_once_in_the_evaluated_week(
        world) -> None:
    leaf = lambda control: next(i for i, x in enumerate(world.leaves) if x.feature == control[1])  # noqa: E731
    busy = world.requests[leaf(BUSY_CONTROL)].reshape(-1, DAY)
    assert (busy.sum(axis=1) > 10_000).all() and busy.max() > 3 * busy.mean()  # busy, and bursty
    monthly = world.requests[leaf(MONTHLY_CONTROL)]
    runs = np.flatnonzero(monthly.reshape(-1, DAY).sum(axis=1))
    assert list(runs) == [at // DAY for at in MONTHLY_RUNS] and runs[0] * DAY < EVAL_START <= runs[1] * DAY
    assert {f"feature={c[1]}" for c in (BUSY_CONTROL, MONTHLY_CONTROL)} <= world.controls


def test_the_daily_rule_fires_at_most_once_a_day_per_key(world) -> None:
    fired = rules.litellm_daily(world)
    days = [(f.subject, (f.minute - 1) // DAY) for f in fired]
    assert len(days) == len(set(days))


def test_the_detectors_that_know_their_noise_beat_the_shipped_ones_on_a_world_they_were_not_tuned_to() -> None:
    from bench.detector_eval import rules_noise, score

    world = generate(load("conv"), seed=11)  # tuning looked at seeds 1 and 2 only
    new = [score.score(world, rules_noise.spend(world), "noise", "spend"),
           score.score(world, rules_noise.retries(world), "noise", "retries")]
    old = [score.score(world, rules.current_spend_anomaly(world), "current", "spend"),
           score.score(world, rules.current_retry_storm(world), "current", "retries")]
    for n, o in zip(new, old, strict=True):
        assert n.control_alerts == 0 and n.precision >= 0.9
        assert n.alerts - n.true_alerts < o.alerts - o.true_alerts  # fewer false alarms
        assert n.recall >= o.recall


def test_the_miss_report_names_every_miss_the_score_counts_and_each_subject_that_could_have_caught_it(world) -> None:
    from bench.detector_eval import misses, rules_noise, score

    lines = misses.diagnose(world)
    counted = score.score(world, rules_noise.spend(world), "noise", "spend").missed
    named = [line.split("MISSED ")[1].split(",")[0] for line in lines if "MISSED " in line]
    assert sorted(named) == sorted(counted)
    for line in lines:
        assert "MISSED " in line or ("held by" in line or "not a subject" in line)


def _pages_at_once(world, fired) -> int:
    """The most on-call pages (``error`` and up, delivered) open at one time for one injected incident."""
    from bench.detector_eval import score

    opened, most = {}, 0
    for f in fired:
        key = (f.subject, f.onset)
        if f.part_of:
            continue
        if f.state in ("firing", "escalated") and f.severity in ("error", "critical") and key not in opened:
            incident = score.true_incident(world, f)
            if incident is not None:
                opened[key] = id(incident)
                most = max(most, sum(v == id(incident) for v in opened.values()))
        elif f.state == "resolved":
            opened.pop(key, None)
    return most


def test_one_incident_pages_once_at_a_time_where_every_subject_apart_pages_several() -> None:
    from bench.detector_eval import rules_noise, score

    world = generate(load("conv"), seed=11)
    fired, fired_apart = rules_noise.spend(world), rules_noise.spend(world, correlated=False)
    assert _pages_at_once(world, fired) == 1
    assert _pages_at_once(world, fired_apart) > 1  # the measure can fail: each subject its own page, as before
    together = rules_noise.messages_per_incident(world, fired)["on-call"]
    apart = rules_noise.messages_per_incident(world, fired_apart)["on-call"]
    assert sum(n > 2 for n in together) < sum(n > 2 for n in apart)
    # the same incidents found; what is attached is neither a false alarm nor a detection of its own
    assert score.score(world, fired, "noise", "spend").recall == score.score(world, fired_apart, "x", "spend").recall


def test_a_storm_alert_is_true_only_for_a_retry_incident_and_a_spend_alert_for_any(world) -> None:
    from bench.detector_eval import score
    from bench.detector_eval.rules import Fired

    creep = next(i for i in world.incidents if i.kind == "creep")
    subject = next(iter(world.incident_subjects(creep)))
    at = creep.start + DAY  # a day into the creep: no retry incident is injected on its customer then
    assert not any(i.kind in score.FAMILIES["retries"] and subject in world.incident_subjects(i)
                   and i.start < at <= i.end + score.GRACE for i in world.incidents)
    storm = Fired("noise", "retry_storm", subject, at, "firing", "error")
    spend = Fired("noise", "spend_anomaly", subject, at, "firing", "warning")
    assert score.true_incident(world, storm) is None  # more traffic is not more failures
    assert score.true_incident(world, spend) is creep


def test_the_delay_report_times_every_spike_as_the_score_does_and_names_a_cause_for_each_late_one(world) -> None:
    from bench.detector_eval import delays, rules_noise, score

    found = delays.timelines(world)
    scored = score.score(world, rules_noise.spend(world), "noise", "spend")
    assert sorted(t.delay for t in found if t.delay is not None and " spike@" in t.tag) == sorted(scored.spike_delays)
    assert sum(t.delay is None for t in found) == sum(m.split("@")[0] in delays.KINDS for m in scored.missed)
    for t in found:
        assert t.window is not None and t.start < t.window <= t.start + 5  # the first pass after the onset
        late = t.delay is None or t.delay > delays.LATE
        assert (t.cause == "on time") != late and (t.hot is None or t.hot >= t.window)


def _before_quiet_keys(world) -> tuple[int, str, str]:
    """The world as it was before the quiet keys: its event count, its incidents, its arrays (digests)."""
    rows = len(world.leaves) - len(SPARSE_STORM_KEYS) - len(QUIET_BLIP_CONTROLS)
    incidents = [(i.kind, i.leaf, i.start, i.end, round(i.excess_usd, 6)) for i in world.incidents
                 if i.kind != "sparse_quiet_storm"]
    arrays = b"".join(np.ascontiguousarray(getattr(world, a)[:rows]).tobytes() for a in _ARRAYS)
    return (int(world.attempts[:rows].sum(dtype=np.float64)), hashlib.sha256(repr(incidents).encode()).hexdigest()[:16],
            hashlib.sha256(arrays).hexdigest()[:16])


def test_the_quiet_keys_leave_every_row_and_incident_before_them_as_they_were(world) -> None:
    # main 1b2ee9f (before the quiet keys) gave exactly these for code, seed 7: event count, incidents, arrays
    assert _before_quiet_keys(world) == (20213304, "69b0f844f98dea6b", "79520465b2093f8e")
    assert len(world.leaves) == 250 + len(CONTROLS) + dict(KINDS)["new_key"] + len(EXTRA_CONTROLS) + 6
    assert [i.kind for i in world.incidents][-len(SPARSE_STORM_KEYS):] == ["sparse_quiet_storm"] * 3


def test_a_sparse_quiet_storm_fails_in_bursts_with_silent_gaps_on_a_quiet_key(world) -> None:
    storms = [i for i in world.incidents if i.kind == "sparse_quiet_storm"]
    assert sorted(world.leaves[i.leaf].feature for i in storms) == sorted(f for _, f, _ in SPARSE_STORM_KEYS)
    for storm in storms:
        leaf, span = storm.leaf, slice(storm.start, storm.end)
        assert EVAL_START <= storm.start and 30 <= storm.end - storm.start <= 90
        assert world.attempts[leaf, :EVAL_START].mean() < 1.0  # quiet: under a request a minute, as a rule
        active = np.flatnonzero(world.attempts[leaf, span])
        requests, failed = world.requests[leaf, span][active], world.failed[leaf, span][active]
        assert (failed >= 3 * requests).all() and (failed <= 6 * requests).all()  # 3–6 failed attempts a request
        longest = world.max_attempt[leaf, span].max()
        assert 4 <= longest < RetryStormRule().loop_attempts  # a storm, not a loop
        gaps = np.diff(active) - 1  # silent minutes between minutes that sent
        assert (gaps >= 5).sum() >= 1 and gaps.max() <= 15 + 2 * 2  # a burst's minutes are ≤ 3, its gap 5–15
        assert ((gaps <= 2) | (gaps >= 5)).all()
        assert storm.excess_usd > 0 and storm.excess_usd == pytest.approx(float(storm.excess.sum()))
        assert world.incident_subjects(storm).isdisjoint(world.controls)


def test_a_quiet_blip_fails_a_few_attempts_and_then_its_key_is_silent(world) -> None:
    blips = world.blips
    assert len(blips) == quiet_keys.BLIPS_PER_KEY * len(QUIET_BLIP_CONTROLS)
    assert not any(i.kind == "quiet_blip" for i in world.incidents)  # a control, not an incident
    for blip in blips:
        leaf = blip.leaf
        assert EVAL_START <= blip.start < blip.end <= world.minutes
        sent = np.flatnonzero(world.attempts[leaf, blip.start:blip.end])
        assert len(sent) and sent.max() < 4  # the blip's minutes only, then nothing
        assert blip.end - blip.start - sent.max() - 1 >= 15
        span = slice(blip.start, blip.end)
        requests, failed = world.requests[leaf, span].sum(), world.failed[leaf, span].sum()
        assert 1 <= requests <= 3 and requests <= failed <= 3 * requests
        subjects = world.incident_subjects(blip)
        assert subjects <= world.controls and {world.control_kinds[s] for s in subjects} == {"quiet_blip"}


def test_the_quiet_keys_are_the_seed_s_and_only_the_seed_s(world) -> None:
    again, other = generate(load("code"), seed=7), generate(load("code"), seed=8)
    for a in _ARRAYS:
        assert np.array_equal(getattr(world, a), getattr(again, a))
    key = lambda w: [(i.kind, i.leaf, i.start, i.end) for i in w.incidents + w.blips]  # noqa: E731
    assert key(again) == key(world) and key(other) != key(world)
    quiet = slice(len(world.leaves) - 6, None)
    assert not np.array_equal(world.failed[quiet], other.failed[quiet])


def test_a_storm_alert_on_a_quiet_blip_is_a_control_alert_and_one_on_a_sparse_storm_is_true(world) -> None:
    from bench.detector_eval import score
    from bench.detector_eval.rules import Fired

    blip = world.blips[0]
    storm = next(i for i in world.incidents if i.kind == "sparse_quiet_storm")
    feature = lambda i: f"feature={world.leaves[i.leaf].feature}"  # noqa: E731
    fired = [Fired("noise", "retry_storm", feature(blip), blip.start + 5, "firing", "error"),
             Fired("noise", "retry_storm", feature(storm), storm.start + 5, "firing", "error")]
    s = score.score(world, fired, "noise", "retries")
    assert (s.alerts, s.true_alerts, s.control_alerts, s.blips_alerted) == (2, 1, 1, 1)
    assert s.control_by == {"quiet_blip": 1} and s.found["sparse_quiet_storm"] == 1
    assert s.counted["sparse_quiet_storm"] == len(SPARSE_STORM_KEYS)
