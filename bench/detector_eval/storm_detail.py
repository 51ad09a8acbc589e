"""Retry-storm recall split by incident kind and by a slow burn's size, and what a burn gives a count test.

    PYTHONPATH=. .venv/bin/python -m bench.detector_eval.storm_detail --seeds 1 2 3 4 5

The same worlds and rules as ``--rules noise --families retries``. Per slow burn: the feature's attempts and
failed attempts over the burn, the failures expected at its own ratio (the week before the burn), the
excess dollars, whether it was found, and what a count test could at best make of it: the log-likelihood
ratio of a doubled failure ratio over exactly the burn (an oracle that knows its start and end: no test
that does not can show more, in expectation) against the threshold a CUSUM over five-minute periods needs
for ``--false`` false alarms a day per 100 features. Read as a CUSUM, such a test alarms falsely once in
ARL ≈ e^h / |drift| periods (Wald, Siegmund), the drift being ``(r - 1 - ln r)`` × a period's expected
failures, so about ``(r - 1 - ln r) × failures a day × e^-h`` false alarms a day per feature, whatever the
period: h = ln((r - 1 - ln r) × failures a day × 100 / false). An overestimate of what the CUSUM could do
for it: on real traffic the expected ratio is itself estimated.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from bench.detector_eval import rules_noise, score
from bench.detector_eval.traces import SHAPES, load
from bench.detector_eval.traffic import RETRY_KINDS, generate

RATIO = 2.0  # a burn doubles the failure ratio

SIZES = ((0, 1000), (1000, 2000), (2000, 4000), (4000, 10 ** 9))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
    parser.add_argument("--false", type=float, default=0.5,
                        help="false alarms a day per 100 features the oracle's CUSUM threshold allows")
    args = parser.parse_args()
    found, total = defaultdict(int), defaultdict(int)
    by_size, size_total = defaultdict(int), defaultdict(int)
    merged, burns = None, []
    for shape in args.shapes:
        trace = load(shape)
        for seed in args.seeds:
            world = generate(trace, seed)
            fired = rules_noise.retries(world)
            s = score.score(world, fired, "noise", "retries")
            merged = merged.merge(s) if merged else s
            firings = [f for f in fired if f.state == "firing"]
            for incident in (i for i in world.incidents if i.kind in RETRY_KINDS):
                subjects = world.incident_subjects(incident)
                hit = any(f.subject in subjects and incident.start < f.minute <= incident.end + score.GRACE
                          for f in firings)
                total[incident.kind] += 1
                found[incident.kind] += hit
                if incident.kind != "slow_burn":
                    continue
                leaves = list(incident.leaves)
                span = slice(incident.start, incident.end)
                before = slice(incident.start - 7 * 1440, incident.start)
                attempts = float(world.attempts[leaves, span].sum())
                failed = float(world.failed[leaves, span].sum())
                own = float(world.failed[leaves, before].sum() / max(world.attempts[leaves, before].sum(), 1))
                expected = attempts * own
                llr = failed * np.log(RATIO) - (RATIO - 1) * expected
                day = float(world.attempts[leaves, slice(incident.start - 1440, incident.start)].sum()) * own
                threshold = float(np.log(max((RATIO - 1 - np.log(RATIO)) * day * 100 / args.false, 1.0)))
                excess = float(incident.excess_usd)
                burns.append((shape, seed, world.leaves[incident.leaf].feature, attempts, expected, failed, llr,
                              threshold, excess, hit))
                size = next(k for k, (lo, hi) in enumerate(SIZES) if lo <= attempts < hi)
                size_total[size] += 1
                by_size[size] += hit
    print(f"recall {merged.recall:.2f} ({merged.detected}/{merged.incidents}), precision {merged.precision:.2f} "
          f"({merged.true_alerts}/{merged.alerts}), false alarms/day/100 keys {merged.false_per_day_per_100:.2f}, "
          f"negative-control alerts {merged.control_alerts}; oracle's threshold at {args.false} false alarms/day/100 "
          "features")
    print("| kind | found |\n|---|---|")
    for kind in RETRY_KINDS:
        print(f"| {kind} | {found[kind]}/{total[kind]} |")
    print("\n| burn attempts (3 h) | found |\n|---|---|")
    for k, (lo, hi) in enumerate(SIZES):
        print(f"| {lo}–{hi if hi < 10 ** 9 else '…'} | {by_size[k]}/{size_total[k]} |")
    print("\n| shape | seed | feature | attempts | expected failed | failed | LLR of a doubling | threshold (day "
          "before) | excess $ | found |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for shape, seed, feature, attempts, expected, failed, llr, threshold, excess, hit in sorted(burns,
                                                                                               key=lambda b: b[3]):
        print(f"| {shape} | {seed} | {feature} | {attempts:.0f} | {expected:.1f} | {failed:.0f} | {llr:.1f} | "
              f"{threshold:.1f} | {excess:.2f} | {'yes' if hit else 'no'} |")


if __name__ == "__main__":
    main()
