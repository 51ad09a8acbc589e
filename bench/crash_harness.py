"""Crash harness: kill -9 workers under load, restart the broker between runs, send duplicates and
conflicting re-sends; then check ClickHouse against the ground truth of distinct events.

    .venv/bin/python bench/crash_harness.py [--runs 2] [--cycles 20] [--rate 1000] [--duplicates 0.05]
                                            [--conflicts 0.01]

See spendstream/demo/crash.py. Results go in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import logging

from spendstream.demo.crash import run_harness


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--cycles", type=int, default=20, help="kill -9 cycles per run")
    parser.add_argument("--rate", type=float, default=1_000.0, help="events per second")
    parser.add_argument("--duplicates", type=float, default=0.05, help="share of events sent twice")
    parser.add_argument("--conflicts", type=float, default=0.01,
                        help="share of events sent again later with other content under the same id")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    result = run_harness(runs=args.runs, cycles=args.cycles, rate=args.rate, duplicate_share=args.duplicates,
                         conflict_share=args.conflicts)
    print("\n".join(result.lines()))
    raise SystemExit(0 if result.exact else 1)


if __name__ == "__main__":
    main()
