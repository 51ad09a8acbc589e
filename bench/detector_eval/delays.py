"""Why a spike (or a night abuse) was delivered late or not at all: its timeline, pass by pass, and what held it.

    PYTHONPATH=. .venv/bin/python -m bench.detector_eval.delays --seeds 1 2 3 4 5

A diagnostic beside :mod:`.misses` and :mod:`.flaps`: it runs the same spend rule (:func:`.rules_noise.spend`)
and scores nothing. For every spike and night abuse over the floor, four times, in minutes from its onset:

- ``window``: the first pass whose fast window holds any of it (a pass runs every ``rules.STEP`` minutes);
- ``hot``: the first pass on which any of its subjects (team, feature, customer, pair) is hot;
- ``delivered``: the first delivered trigger on one of them (as :mod:`.score` counts a detection);

and, when delivery came later than ``LATE`` minutes or never, one cause:

- before the first hot pass, the term of the threshold that held the subject closest to it, at most passes
  from the onset to the first hot pass (or to the incident's end): ``tail`` (the count or gamma tail),
  ``ratio``, ``peak`` (1.25 × the typical 10-minute peak of the hour), ``day peak`` (a pair's share of its
  busiest 10 minutes of a day, when that is what set its peak), ``excess`` (under the minimum excess),
  ``requests`` (under the minimum count), ``warm-up``;
- between the first hot pass and delivery: ``hysteresis`` (hot but not very hot: pending until a second
  hot pass; a blip that was not hot twice), ``already open`` (a subject firing since before the onset: its
  incident takes this one in), ``correlation`` (a subject's trigger stored as part of an incident whose
  root is not delivered in time).

Severity and routing do not delay a detection as scored here (any delivered trigger counts); the harness
has every pair as a subject (production learns the costliest), so "not a subject" does not arise.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from bench.detector_eval import rules_noise, score
from bench.detector_eval.rules import STEP, Fired
from bench.detector_eval.traces import SHAPES, load
from bench.detector_eval.traffic import World, generate
from spendstream.detect.spend import SpendAnomalyRule

KINDS = ("spike", "night_abuse")
LATE = 10  # minutes: issue 18's target for a spike's median delay


@dataclass
class Timeline:
    tag: str
    start: int
    window: int | None = None
    hot: int | None = None
    delivered: int | None = None
    held: Counter = field(default_factory=Counter)   # term -> passes it held the closest subject, before hot
    hot_after: list[int] = field(default_factory=list)  # minutes from onset of every hot pass (the first few)
    cause: str = ""
    line: str = ""        # the closest subject's best pass before it was hot
    first_hot: str = ""   # on the first hot pass, why no hot subject was very hot (fired at once)

    @property
    def delay(self) -> int | None:
        return None if self.delivered is None else self.delivered - self.start


def _terms(rule: SpendAnomalyRule, p: rules_noise.Pass, s: int, pair: bool) -> dict[str, float]:
    e = p.expected
    peak = rule.peak_margin * float(e.peak[s])
    hour_of_week = ((p.minute - 1) // 60) % 168
    day = p.profiles.day_peak_in(hour_of_week)
    by_day = pair and day is not None and rule.day_peak_share * float(day[s]) >= float(e.peak[s]) - 1e-9
    return {"tail": float(rule.tail(e, p.observed_requests)[s]),
            "ratio": (rule.pair_min_ratio if pair else rule.min_ratio) * float(e.cost[s]),
            "day peak" if by_day else "peak": peak}


def _threshold(rule: SpendAnomalyRule, e, observed_requests: np.ndarray, s: int, pair: bool) -> float:
    ratio = rule.pair_min_ratio if pair else rule.min_ratio
    return max(float(rule.tail(e, observed_requests)[s]), ratio * float(e.cost[s]),
               rule.peak_margin * float(e.peak[s]))


def _not_very_hot(rule: SpendAnomalyRule, p: rules_noise.Pass, rows: list[int]) -> str:
    """Per hot subject: its window over the line (× the threshold) and its excess; the last minutes' the same
    (against the line over those minutes, the peak at their share), as :meth:`SpendAnomalyRule.fast` judges them."""
    from dataclasses import replace

    out = []
    for s in rows:
        pair = ",customer=" in p.names[s]
        e = p.expected
        usual = max(float(e.cost[s]), float(e.peak[s]))
        over = p.observed_usd[s] / _threshold(rule, e, p.observed_requests, s, pair)
        text = (f"{p.names[s]}{' VERY' if p.fast.very_hot[s] else ''} {over:.2f}x"
                f" +${p.observed_usd[s] - usual:.2f}")
        if p.short:
            short = replace(p.short["short"], peak=p.short["short"].peak * rule.short_minutes / rule.window_minutes)
            line = _threshold(rule, short, p.short["short_requests"], s, pair)
            text += (f" (last {rule.short_minutes}: {p.short['short_usd'][s] / line:.2f}x"
                     f" +${p.short['short_usd'][s] - max(float(short.cost[s]), float(short.peak[s])):.2f})")
        out.append(text)
    return "; ".join(out)


def timelines(world: World, rule: SpendAnomalyRule | None = None) -> list[Timeline]:
    rule = rule or SpendAnomalyRule()
    chosen = [i for i in world.incidents if i.kind in KINDS and i.excess_usd >= score.FLOOR_USD]
    out = [Timeline(f"{world.shape} {world.seed} {i.kind}@{world.leaves[i.leaf].feature}/"
                    f"{world.leaves[i.leaf].customer} ${i.excess_usd:.0f} {i.end - i.start} min", i.start)
           for i in chosen]
    index: dict[str, int] = {}
    best: dict[int, float] = {}

    def probe(p: rules_noise.Pass) -> None:
        if not index:
            index.update({name: k for k, name in enumerate(p.names)})
        for n, incident in enumerate(chosen):
            tl = out[n]
            if not incident.start < p.minute <= incident.end + score.GRACE:
                continue
            if tl.window is None:
                tl.window = p.minute
            rows = [index[s] for s in world.incident_subjects(incident) if s in index]
            if any(p.fast.hot[s] or p.fast.very_hot[s] for s in rows):
                if tl.hot is None:
                    tl.first_hot = _not_very_hot(rule, p, [s for s in rows if p.fast.hot[s]])
                tl.hot = p.minute if tl.hot is None else tl.hot
                if len(tl.hot_after) < 8:
                    tl.hot_after.append(p.minute - incident.start)
            if tl.hot is not None:
                continue
            closest, why, how_close = None, "", -1.0
            for s in rows:
                pair = ",customer=" in p.names[s]
                terms = _terms(rule, p, s, pair)
                term = max(terms, key=terms.get)
                usual = max(float(p.expected.cost[s]), float(p.expected.peak[s]))
                observed = float(p.observed_usd[s])
                closeness = observed / max(terms[term], 1e-9)
                if closeness >= 1:  # over every line: what else held it
                    if p.profiles.history_hours[s] < rule.warmup_hours:
                        term = "warm-up"
                    elif observed - usual < rule.min_excess_usd:
                        term = "excess"
                    elif p.observed_requests[s] < rule.min_requests:
                        term = "requests"
                if closeness > how_close:
                    closest, why, how_close = s, term, closeness
            if closest is None:
                continue
            tl.held[why] += 1
            if how_close > best.get(n, -1.0):
                best[n] = how_close
                s = closest
                tl.line = (f"{p.names[s]} at +{p.minute - incident.start}: ${p.observed_usd[s]:.2f} in "
                           f"{p.observed_requests[s]:.0f} req, expected ${p.expected.cost[s]:.2f}, "
                           + ", ".join(f"{k} ${v:.2f}" for k, v in _terms(rule, p, s, ",customer=" in p.names[s]
                                                                          ).items())
                           + f": {how_close:.2f}x of {why}")

    fired = rules_noise.spend(world, rule, probe=probe)
    for n, incident in enumerate(chosen):
        _explain(out[n], incident, world, fired)
    return out


def _explain(tl: Timeline, incident, world: World, fired: list[Fired]) -> None:
    subjects = world.incident_subjects(incident)
    horizon = incident.end + score.GRACE
    mine = [f for f in fired if f.subject in subjects and f.kind == "spend_anomaly"]
    delivered = [f.minute for f in mine if f.state == "firing" and not f.part_of and incident.start < f.minute
                 <= horizon]
    tl.delivered = min(delivered) if delivered else None
    if tl.delivered is not None and tl.delay <= LATE:
        tl.cause = "on time"
        return
    if tl.hot is None or (tl.delivered is not None and tl.hot >= tl.delivered):
        tl.cause = "not hot: " + (tl.held.most_common(1)[0][0] if tl.held else "no pass")
        return
    opened_before = _open_at(mine, incident.start)
    attached = [f for f in mine if f.state == "firing" and f.part_of and tl.hot <= f.minute <= horizon]
    if opened_before:
        tl.cause = "already open"
    elif attached and (tl.delivered is None or min(f.minute for f in attached) < tl.delivered):
        tl.cause = "correlation"
    elif len(tl.hot_after) > 1 and tl.hot_after[1] - tl.hot_after[0] == STEP:
        tl.cause = "hysteresis: pending one pass"
    else:
        tl.cause = "hysteresis: a hot pass alone (blip)"


def _open_at(fired: list[Fired], minute: int) -> bool:
    """Whether some subject's incident was firing at ``minute`` (opened before it, not yet resolved)."""
    state: dict[str, bool] = {}
    for f in sorted(fired, key=lambda f: f.minute):
        if f.minute > minute:
            break
        if f.state == "firing":
            state[f.subject] = True
        elif f.state == "resolved":
            state[f.subject] = False
    return any(state.values())


def _m(minute: int | None, start: int) -> str:
    return "-" if minute is None else f"+{minute - start}"


def summary(found: list[Timeline]) -> list[str]:
    delays = [t.delay for t in found if t.delay is not None]
    late = [t for t in found if t.delay is None or t.delay > LATE]
    lines = [f"{len(found)} incidents ({', '.join(KINDS)}), delay p50 "
             f"{np.percentile(delays, 50) if delays else float('nan'):.0f} / p90 "
             f"{np.percentile(delays, 90) if delays else float('nan'):.0f} min, {len(late)} late (> {LATE} min) "
             f"or missed ({sum(t.delay is None for t in found)})"]
    for label, pick in (("late", lambda t: t.delay is not None), ("missed", lambda t: t.delay is None)):
        causes = Counter(t.cause for t in late if pick(t))
        lines.append(f"- {label}: " + (", ".join(f"{c} {n}" for c, n in causes.most_common()) or "none"))
    first_pass = Counter((t.hot - t.start) // STEP if t.hot is not None else -1 for t in found)
    lines.append("- first hot pass after onset (pass number: incidents): "
                 + ", ".join(f"{k + 1 if k >= 0 else 'never'}: {n}" for k, n in sorted(first_pass.items())))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
    parser.add_argument("--all", action="store_true", help="print on-time incidents too")
    args = parser.parse_args()
    found: list[Timeline] = []
    for shape in args.shapes:
        trace = load(shape)
        for seed in args.seeds:
            for tl in timelines(generate(trace, seed)):
                found.append(tl)
                if args.all or tl.cause != "on time":
                    print(f"{tl.tag}: window {_m(tl.window, tl.start)}, hot {_m(tl.hot, tl.start)}, delivered "
                          f"{_m(tl.delivered, tl.start)}: {tl.cause}; hot at {tl.hot_after} [{tl.first_hot}]; "
                          f"held {dict(tl.held)}; "
                          f"closest {tl.line}",
                          flush=True)
    print("\n".join(summary(found)))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
