"""How fast stored meter rows become FOCUS columns and a CSV file, without the query.

    .venv/bin/python bench/focus_export.py [--rows 500000] [--repeat 3]

Rows: the shape ``spendstream.focus.QUERY`` returns (one row per hour × provider ×
model × attribution × tags × token-type meter), generated and seeded: 9 catalog
providers plus one the table does not know, 40 teams, 2,000 customers, a few tag
sets, a 1 % share of general-calculation ("usage") rows. Reports rows/s of
``focus_columns`` and of writing the CSV (date/times as FOCUS strings), best of
``--repeat``. The query itself is measured by bench/read_scale.py's kind of run.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv

from spendstream.focus import MONEY, PROVIDERS, TOKENS, focus_columns, focus_text_dates

METERS = ["input", "cached input", "cache write", "cache write 1h", "output", "reasoning", "usage"]


def usage_rows(n: int, seed: int = 7) -> pa.Table:
    rng = random.Random(seed)
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    providers = [*PROVIDERS, "acme-cloud"]
    ts = pa.timestamp("ms", tz="UTC")
    hours = [start + timedelta(hours=rng.randrange(24 * 30)) for _ in range(n)]
    meters = [rng.choice(METERS[:6]) if rng.random() > 0.01 else "usage" for _ in range(n)]
    tokens = [rng.randrange(1, 5_000_000) for _ in range(n)]
    price = [None if m == "usage" else Decimal(rng.choice(["0.15", "2.5", "10", "0.075", "3.75"])) for m in meters]
    cost = [Decimal(t) * (p or Decimal("1.1")) / 1_000_000 for t, p in zip(tokens, price, strict=True)]
    return pa.table({
        "period_start": pa.array(hours, ts), "period_end": pa.array([h + timedelta(hours=1) for h in hours], ts),
        "month_start": pa.array([h.replace(day=1, hour=0) for h in hours], ts),
        "month_end": pa.array([(h.replace(day=1, hour=0) + timedelta(days=32)).replace(day=1) for h in hours], ts),
        "provider_id": [rng.choice(providers) for _ in range(n)],
        "model_id": [f"model-{rng.randrange(30)}" for _ in range(n)],
        "mode": ["realtime"] * n, "tier": pa.nulls(n, pa.string()), "price_source": ["catalog"] * n,
        "team": [f"team-{rng.randrange(40)}" for _ in range(n)],
        "feature": [f"feature-{rng.randrange(25)}" for _ in range(n)],
        "customer": [f"c{rng.randrange(2000)}" for _ in range(n)],
        "environment": [rng.choice(["prod", "staging"]) for _ in range(n)],
        "tags_json": [rng.choice(['{}', '{"cost-center":"cc-1","spendstream/team":"t"}']) for _ in range(n)],
        "meter": meters,
        "tokens": pa.array([Decimal(t) for t in tokens], TOKENS),
        "pricing_quantity": pa.array([Decimal(t) / 1_000_000 for t in tokens], MONEY),
        "unit_price": pa.array(price, MONEY), "list_unit_price": pa.array(price, MONEY),
        "meter_effective_cost": pa.array(cost, MONEY), "meter_list_cost": pa.array(cost, MONEY),
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    usage = usage_rows(args.rows)
    accounts = {"openai": "org-1", "anthropic": "acct-2"}
    columns_s, csv_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            began = time.perf_counter()
            table = focus_columns(usage, accounts)
            columns_s.append(time.perf_counter() - began)
            began = time.perf_counter()
            pa_csv.write_csv(focus_text_dates(table), Path(tmp) / "focus.csv")
            csv_s.append(time.perf_counter() - began)
    print(f"{args.rows:,} meter rows: focus_columns {args.rows / min(columns_s):,.0f} rows/s, "
          f"CSV with FOCUS date/times {args.rows / min(csv_s):,.0f} rows/s (best of {args.repeat})")


if __name__ == "__main__":
    main()
