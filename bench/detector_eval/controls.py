"""Why a negative control fired, or nearly did: one line per control subject and day it came within 80 % of its line.

    PYTHONPATH=. .venv/bin/python -m bench.detector_eval.controls --seeds 1 2 3 4 5

For every control subject (the nightly job, the weekday job, the lunch peak, the busy key, the month-end
job: their team, feature, customer and pair) and every evaluated day, the pass where its 10-minute window
came closest to the line :meth:`~spendstream.detect.spend.SpendAnomalyRule.line` holds it to: the window's
dollars, the line and its terms (``tail``, ``ratio`` × expected, ``peak`` margin × the typical peak), whether
the window was hot (and very hot), and the subject's own busiest 10 minutes around that hour (± 1 h) on each
learned day of the same kind (weekday or weekend): min, median and max, so a line inside the subject's own
night-to-night spread shows. Diagnostics only: the scoring is :mod:`.score`'s.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from bench.detector_eval import rules_noise, score
from bench.detector_eval.traces import SHAPES, load
from bench.detector_eval.traffic import DAY, World, generate
from spendstream.detect.spend import SpendAnomalyRule

NEAR = 0.8  # window ÷ line from which a control's window is a near miss


@dataclass
class _Day:
    ratio: float = -1.0
    minute: int = 0
    usd: float = 0.0
    line: float = 0.0
    terms: str = ""
    hot: bool = False
    very_hot: bool = False
    spread: str = ""


def diagnose(world: World, rule: SpendAnomalyRule | None = None) -> tuple[list[str], int]:
    """The near-miss lines of one world and how many control alerts fired in it."""
    lines, alerts, _ = _diagnose(world, rule)
    return lines, alerts


def _diagnose(world: World, rule: SpendAnomalyRule | None = None
              ) -> tuple[list[str], int, list[rules_noise.Fired]]:
    rule = rule or SpendAnomalyRule()
    closest: dict[tuple[str, int], _Day] = {}
    index: dict[str, int] = {}
    pair_names, pair_membership = world.pairs()
    names = world.subjects + pair_names
    hours = rules_noise._Hours(world, np.arange(len(names)), np.concatenate([world.membership, pair_membership]))

    def spread(s: int, minute: int) -> str:
        """The subject's busiest 10 minutes at this hour ± 1 on each learned day of this kind (as the refresh
        learns: the profile ends ``LEARN_LAG_H`` back)."""
        hour, end = minute // 60, (minute // 60 - rules_noise.LEARN_LAG_H) // 24
        weekend = (hour // 24) % 7 >= 5
        days = [d for d in range(max(0, end - 14), end) if ((d % 7) >= 5) == weekend]
        peaks = [hours.peak[s, max(0, d * 24 + hour % 24 - 1):d * 24 + hour % 24 + 2].max() for d in days]
        if not peaks:
            return "no learned days"
        return f"own peaks over {len(peaks)} days: {min(peaks):.2f} / {np.median(peaks):.2f} / {max(peaks):.2f}"

    def probe(p: rules_noise.Pass) -> None:
        if not index:
            index.update({name: i for i, name in enumerate(p.names)})
        pair = np.array([",customer=" in n for n in p.names])
        line = rule.line(p.expected, p.observed_requests, pair)
        ratio = np.where(line > 0, p.observed_usd / np.maximum(line, 1e-9), 0.0)
        for subject in world.controls:
            s = index.get(subject)
            if s is None or (ratio[s] < NEAR and not p.fast.hot[s]):
                continue
            day = closest.setdefault((subject, p.minute // DAY), _Day())
            if ratio[s] > day.ratio or (p.fast.hot[s] and not day.hot):
                min_ratio = rule.pair_min_ratio if pair[s] else rule.min_ratio
                tail = float(rule.tail(p.expected, p.observed_requests)[s])
                day.ratio, day.minute, day.usd, day.line = float(ratio[s]), p.minute, float(p.observed_usd[s]), \
                    float(line[s])
                day.terms = (f"tail {tail:.2f}, ratio {min_ratio * float(p.expected.cost[s]):.2f}, "
                             f"peak {rule.peak_margin * float(p.expected.peak[s]):.2f}")
                day.hot = day.hot or bool(p.fast.hot[s])
                day.very_hot = day.very_hot or bool(p.fast.very_hot[s])
                day.spread = spread(index[subject], p.minute)

    fired = rules_noise.spend(world, rule, probe=probe)
    alerts = sum(f.subject in world.controls and f.state == "firing" for f in fired)
    lines = []
    for (subject, day), c in sorted(closest.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        at = f"day {day} {c.minute % DAY // 60:02d}:{c.minute % 60:02d}"
        verdict = "VERY HOT" if c.very_hot else "hot" if c.hot else "near"
        lines.append(f"- {world.shape} seed {world.seed} {subject} {at}: ${c.usd:.2f} / line ${c.line:.2f} = "
                     f"{c.ratio:.2f} ({verdict}; {c.terms}); {c.spread}")
    return lines, alerts, fired


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
    args = parser.parse_args()
    total = near = 0
    scored: score.Score | None = None
    per_incident: dict[str, list[int]] = {}
    for shape in args.shapes:
        trace = load(shape)
        for seed in args.seeds:
            world = generate(trace, seed)
            lines, alerts, fired = _diagnose(world)
            total += alerts
            near += len(lines)
            print("\n".join(lines) if lines else f"- {shape} seed {seed}: no control within {NEAR:.0%} of its line",
                  flush=True)
            s = score.score(world, fired, "noise", "spend")  # the spend run the harness scores, from the same pass
            scored = s if scored is None else scored.merge(s)
            for dest, counts in rules_noise.messages_per_incident(world, fired).items():
                per_incident.setdefault(dest, []).extend(counts)
    print(f"\ncontrol alerts (firing): {total}; control subject-days within {NEAR:.0%} of the line or hot: {near}")
    if scored is not None:
        print(f"spend as the harness scores it: recall {scored.recall:.2f} ({scored.detected}/{scored.incidents}), "
              f"precision {scored.precision:.2f} ({scored.true_alerts}/{scored.alerts}), false alarms/day/100 keys "
              f"{scored.false_per_day_per_100:.2f}, control alerts {scored.control_alerts}")
    for dest, counts in per_incident.items():
        if counts:
            print(f"spend messages per incident to {dest} ({len(counts)} incidents): max {max(counts)}, over 2: "
                  f"{sum(n > 2 for n in counts)}")


if __name__ == "__main__":
    main()
