"""Why the spend detector missed what it missed: one line per missed incident and one per subject of it.

    PYTHONPATH=. .venv/bin/python -m bench.detector_eval.misses --seeds 1 --shapes conv

For every spend incident over the floor that no alert caught in time (as :mod:`.score` counts
it), and for each subject that could have caught it (its team, feature, customer and pair):
the subject's usual spend, and at the pass where it came closest to firing the window's
dollars and requests against each term of the threshold (``z``: expected + z·sigma, ``ratio``:
min ratio × expected, ``peak``: peak margin × the typical peak), so the term that held it is
named; and when the slow window (or the fast one) first fired, if ever, to tell a late creep
from one never seen.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import numpy as np

from bench.detector_eval import rules_noise, score
from bench.detector_eval.traces import SHAPES, load
from bench.detector_eval.traffic import DAY, World, generate
from spendstream.detect.spend import SpendAnomalyRule


@dataclass
class _Closest:
    best: float = -1.0
    line: str = "never evaluated"
    first_fast: int | None = None
    first_slow: int | None = None
    slow_excess_max: float = float("-inf")
    notes: list[str] = field(default_factory=list)


def diagnose(world: World, rule: SpendAnomalyRule | None = None) -> list[str]:
    rule = rule or SpendAnomalyRule()
    incidents = [i for i in world.incidents if i.kind in score.FAMILIES["spend"] and i.excess_usd >= score.FLOOR_USD]
    watch: dict[tuple[int, str], _Closest] = {}
    index: dict[str, int] = {}

    def probe(p: rules_noise.Pass) -> None:
        if not index:
            index.update({name: i for i, name in enumerate(p.names)})
        for n, incident in enumerate(incidents):
            horizon = incident.start + (7 * DAY if incident.kind == "creep" else incident.end - incident.start
                                        + score.GRACE)
            if not incident.start < p.minute <= horizon:
                continue
            for subject in world.incident_subjects(incident):
                s = index.get(subject)
                if s is None:
                    continue
                c = watch.setdefault((n, subject), _Closest())
                if p.fast.hot[s] and c.first_fast is None:
                    c.first_fast = p.minute
                if p.slow.hot[s] and c.first_slow is None:
                    c.first_slow = p.minute
                c.slow_excess_max = max(c.slow_excess_max, float(p.slow.excess_usd[s]))
                e = p.expected
                pair = ",customer=" in subject
                terms = {"z": rule.tail(e, p.observed_requests)[s],
                         "ratio": (rule.pair_min_ratio if pair else rule.min_ratio) * e.cost[s],
                         "peak": rule.peak_margin * e.peak[s]}
                held = max(terms, key=terms.get)
                closeness = p.observed_usd[s] / max(terms[held], 1e-9)
                if closeness > c.best:
                    c.best = closeness
                    c.line = (f"at +{p.minute - incident.start} min: ${p.observed_usd[s]:.2f} in "
                              f"{p.observed_requests[s]:.0f} req (expected ${e.cost[s]:.2f}, {e.requests[s]:.1f} req); "
                              f"z ${terms['z']:.2f} ratio ${terms['ratio']:.2f} peak ${terms['peak']:.2f}: held by "
                              f"{held} ({closeness:.2f}x of it); history {p.profiles.history_hours[s]:.0f} h")

    fired = rules_noise.spend(world, rule, probe=probe)
    missed = set(score.score(world, [f for f in fired if f.kind == "spend_anomaly" or f.kind == "new_spender"],
                             "noise", "spend").missed)
    out = []
    for n, incident in enumerate(incidents):
        leaf = world.leaves[incident.leaf]
        tag = (f"{incident.kind}@{leaf.feature}/{leaf.customer} ${incident.excess_usd:.0f}")
        if tag not in missed:
            continue
        out.append(f"{world.shape} seed {world.seed}: MISSED {tag}, {incident.end - incident.start} min from "
                   f"day {incident.start // DAY} {incident.start % DAY // 60:02d}:{incident.start % 60:02d}")
        for subject in sorted(world.incident_subjects(incident)):
            c = watch.get((n, subject))
            if c is None:
                out.append(f"    {subject}: not a subject the detector keeps")
                continue
            out.append(f"    {subject}: {c.line}; first fast hot {_after(c.first_fast, incident.start)}, first slow "
                       f"hot {_after(c.first_slow, incident.start)}, slow excess max ${c.slow_excess_max:.0f}")
    return out


def _after(minute: int | None, start: int) -> str:
    return "never" if minute is None else f"+{(minute - start) / 60:.1f} h"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
    args = parser.parse_args()
    for shape in args.shapes:
        trace = load(shape)
        for seed in args.seeds:
            for line in diagnose(generate(trace, seed)):
                print(line, flush=True)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
