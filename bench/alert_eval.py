"""Spend-anomaly detection against injected incidents, beside the LiteLLM-style daily rule.

    .venv/bin/python bench/alert_eval.py [--days 14] [--keys 100] [--incidents 40] [--seeds 1 2 3 4 5]

See bench/alert_evaluation.py for the traffic, the incidents and the measures.
"""

from __future__ import annotations

import argparse
import statistics

from alert_evaluation import evaluate  # beside this file


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--incidents", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    args = parser.parse_args()
    runs = [evaluate(args.days, args.keys, args.incidents, seed) for seed in args.seeds]
    for seed, (ours, litellm) in zip(args.seeds, runs, strict=True):
        print(f"seed {seed}\n  {ours.line()}\n  {litellm.line()}")
    for index, name in ((0, "spendstream spend_anomaly"), (1, "LiteLLM-style daily rule")):
        results = [run[index] for run in runs]
        delays = [d for r in results for d in r.delays_windows]
        print(f"all seeds, {name}: recall {sum(r.detected for r in results) / sum(r.incidents for r in results):.3f}, "
              f"precision {sum(r.true_alerts for r in results) / max(sum(r.alerts for r in results), 1):.3f}, "
              f"false alarms/day/100 keys {statistics.mean(r.false_alarms_per_day_per_100_keys for r in results):.2f}, "
              f"median delay {statistics.median(delays) if delays else float('nan'):.1f} windows")


if __name__ == "__main__":
    main()
