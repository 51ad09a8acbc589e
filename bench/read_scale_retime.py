"""Time some readers again on a store `bench/read_scale.py --keep --data-dir DIR` left behind.

    python bench/read_scale_retime.py DIR --result bench/results/read_scale_3000000.json --kind detection

For a change to a reader: the same data, the same "now" (the loaded history's end, from the run's
result file), without loading it again. Prints the median and p95 of each reader of ``--kind``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from read_scale_readers import readers, time_readers  # noqa: E402

from spendstream.sinks.embedded import EmbeddedStore  # noqa: E402
from spendstream.sinks.migrations import migrate  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--result", type=Path, required=True, help="the JSON the loading run wrote")
    parser.add_argument("--kind", default="detection", help="reader group: sql, detection, command, cookbook, grafana")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    result = json.loads(args.result.read_text())
    now = datetime.fromisoformat(result["started"])
    store = EmbeddedStore(args.data_dir)
    try:
        migrate(store)  # a store kept from before a migration was added
        with tempfile.TemporaryDirectory() as scratch:
            chosen = [r for r in readers(store, now=now, events=result["events"], out_dir=Path(scratch))
                      if r.group == args.kind]
            for timing in time_readers(chosen, runs=args.runs):
                t = timing.as_dict()
                print(f"| {t['name']} | {t['window']} | {t['median_s'] * 1000:.0f} ms | {t['p95_s'] * 1000:.0f} ms |")
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
