"""The storm pass's fast window with and without its minutes' cross-section: time and rows, interleaved.

    PYTHONPATH=. .venv/bin/python bench/storm_fast_minutes.py /work/scratch/burn14/fm-store \
        --before /work/scratch/burn14/main/spendstream/detect/retry_storm.py --per-minute 5000 --runs 9

Writes ten minutes of traffic (``--per-minute`` events a minute over 60 features, 300 customers and three
providers, 2 % failing) into a fresh embedded store, then runs ``fast_window`` as ``--before`` has it (another
checkout's ``retry_storm.py``) and as this checkout has it, alternately (A B B A ...), on the same window: the
median wall time of each and the rows each returns. Both read the same raw rows once; this one groups them by
minute too and takes each minute's provider totals with a window function.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson

from spendstream.agents.stages import process
from spendstream.batches import SourceRecord
from spendstream.detect import retry_storm
from spendstream.pricing import Pricer
from spendstream.sinks.embedded import EmbeddedStore
from spendstream.sinks.migrations import migrate
from spendstream.sinks.rows import usage_table

NOW = datetime(2026, 6, 1, 12, 0, 30, tzinfo=timezone.utc)


def _traffic(per_minute: int) -> list[dict]:
    rng, out = random.Random(7), []
    for m in range(10):
        for k in range(per_minute):
            feature = rng.randrange(60)
            failing = rng.random() < 0.02
            out.append({"event_id": f"e{m}-{k}", "request_id": f"r{m}-{k}",
                        "ts": (NOW - timedelta(minutes=10 - m, seconds=-rng.random() * 59)).isoformat(),
                        "provider": ("openai", "anthropic", "google")[feature % 3], "model": "gpt-4o-mini",
                        "feature": f"feat-{feature:02d}", "customer": f"cust-{int(rng.paretovariate(1.1)) % 300:03d}",
                        "input_tokens": 1_000, "output_tokens": 50,
                        **({"status": "error", "http_status": 503} if failing else {})})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path")
    parser.add_argument("--before", required=True)
    parser.add_argument("--per-minute", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("before_retry_storm", args.before)
    before = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = before
    spec.loader.exec_module(before)
    store = EmbeddedStore(Path(args.path))
    migrate(store)
    events = _traffic(args.per_minute)
    for at in range(0, len(events), 20_000):
        store.insert_arrow("usage_events", usage_table(process(
            [SourceRecord("usage", 0, 0, orjson.dumps(events[at:at + 20_000]))], Pricer())))
    times: dict[str, list[float]] = {"before": [], "after": []}
    rows: dict[str, int] = {}
    for run in range(args.runs):
        for name in (("before", "after") if run % 2 == 0 else ("after", "before")):
            fast_window = before.fast_window if name == "before" else retry_storm.fast_window
            t0 = time.perf_counter()
            got = fast_window(store, start=NOW - timedelta(minutes=10), end=NOW)
            times[name].append(time.perf_counter() - t0)
            rows[name] = len(got)
    print(f"{len(events):,} events in the window; rows returned: before {rows['before']:,}, after {rows['after']:,}")
    for name, values in times.items():
        print(f"{name}: median {statistics.median(values) * 1000:.0f} ms over {len(values)} runs "
              f"({', '.join(f'{v * 1000:.0f}' for v in values)})")


if __name__ == "__main__":
    main()
