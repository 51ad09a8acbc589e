"""Which rollup grains are worth keeping: how many events a row of each candidate grain holds.

    python bench/rollup_grains.py --events 10000000      # ~3 min to load, ~2 min to count

Loads the read-scale traffic (bench/read_scale_data.py: 28 days, 24 teams, 200 features,
50,000 Zipf customers, 30 models) into a fresh embedded store and counts the distinct
(period, keys) of each candidate grain in ``usage_events FINAL`` (over the rows the grain keeps,
where it keeps some only). A rollup is worth its upkeep where a row holds many events; a grain
near one event a row is raw again. ``--store DIR`` counts a store ``read_scale.py --keep`` left.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from read_scale_data import Generator  # noqa: E402
from read_scale_load import load  # noqa: E402

from spendstream.sinks.embedded import EmbeddedStore  # noqa: E402
from spendstream.sinks.migrations import migrate  # noqa: E402

EVERY = "team, feature, environment, provider, model, mode, service_tier, deployment, service"
GRAINS = {
    "minute × every key but customer (migration 10's usage_minutes)": ("toStartOfMinute(ts)", EVERY),
    "minute × team, feature, environment, provider, model, service (usage_minutes)":
        ("toStartOfMinute(ts)", "team, feature, environment, provider, model, service"),
    "minute × team": ("toStartOfMinute(ts)", "team"),
    "minute × feature": ("toStartOfMinute(ts)", "feature"),
    "hour × every key and customer (migration 10's usage_hours)": ("toStartOfHour(ts)", f"customer, {EVERY}"),
    "hour × every key but customer (usage_hours)": ("toStartOfHour(ts)", EVERY),
    "hour × customer, team, feature, environment, provider, model (customer_hours)":
        ("toStartOfHour(ts)", "customer, team, feature, environment, provider, model"),
    "hour × customer": ("toStartOfHour(ts)", "customer"),
    "day × every key and customer": ("toDate(ts)", f"customer, {EVERY}"),
    "day × every key but customer": ("toDate(ts)", EVERY),
    "day × customer": ("toDate(ts)", "customer"),
    # the readers' own rollups (sinks/shapes.py), over the rows each keeps
    "hour × feature, price provider and model, priced (advice_hours)":
        ("toStartOfHour(ts)", "feature, price_provider_id, price_model_id", "priced AND feature IS NOT NULL"),
    "5 minutes × feature, price provider and model, prefix fingerprint and length (prefix_windows)":
        ("toStartOfFiveMinutes(ts)", "feature, price_provider_id, price_model_id, prefix_fingerprint, prefix_tokens",
         "priced AND prefix_fingerprint IS NOT NULL AND prefix_tokens IS NOT NULL "
         "AND input_price_per_mtok IS NOT NULL"),
    "hour × the same prefix keys": ("toStartOfHour(ts)", "feature, price_provider_id, price_model_id, "
                                    "prefix_fingerprint, prefix_tokens", "priced AND prefix_fingerprint IS NOT NULL"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--store", type=Path, help="count a store read_scale.py --keep left (nothing is loaded)")
    args = parser.parse_args()
    data_dir = args.store or Path(tempfile.mkdtemp(prefix="spendstream-grains-"))
    try:
        store = EmbeddedStore(data_dir)
        if not args.store:
            migrate(store)
            load(store, Generator(args.events, end=datetime.now(timezone.utc).replace(microsecond=0),
                                  seed=args.seed), chunk_rows=1_000_000)
        events = store.query("SELECT count() FROM usage_events FINAL").scalar()
        print(f"\n{events:,} events over 28 days\n\n| grain | rows | events per row |\n|---|---|---|")
        for name, (period, keys, *where) in GRAINS.items():
            started = time.perf_counter()
            rows = store.query(f"SELECT count() FROM (SELECT {period} AS p, {keys} FROM usage_events FINAL "
                               f"WHERE {where[0] if where else 1} GROUP BY p, {keys})").scalar()
            kept = store.query(f"SELECT count() FROM usage_events FINAL WHERE {where[0]}").scalar() if where else events
            print(f"| {name} | {rows:,} | {kept / rows:.1f} |  <!-- {time.perf_counter() - started:.0f} s -->",
                  flush=True)
        store.close()
    finally:
        if not args.store:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
