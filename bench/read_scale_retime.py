"""Time some readers again on a store `bench/read_scale.py --keep --data-dir DIR` left behind.

    python bench/read_scale_retime.py DIR --result bench/results/read_scale_3000000.json --kind detection
    python bench/read_scale_retime.py DIR --result before.json --kind all --out after.json   # for --compare
    python bench/read_scale_retime.py DIR --result ... --kind detection --skip "baseline refresh"
    python bench/read_scale_retime.py DIR --result ... --kind command --omit "export focus"   # not run at all

For a change to a reader: the same data, the same "now" (the loaded history's end, from the run's
result file), without loading it again (a store kept from before a migration is migrated first, as
a worker would). Prints the median and p95 of each reader of ``--kind``; with ``--out``, writes the
loading run's result with these timings and the store's tables now, for ``read_scale.py --compare``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from read_scale import STORAGE_SQL  # noqa: E402
from read_scale_readers import readers, time_readers  # noqa: E402

from spendstream.sinks.embedded import EmbeddedStore  # noqa: E402
from spendstream.sinks.migrations import migrate  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--result", type=Path, required=True, help="the JSON the loading run wrote")
    parser.add_argument("--kind", default="detection",
                        help="reader group: sql, detection, command, cookbook, grafana, or all")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip", action="append", default=[], metavar="NAME",
                        help="a reader whose name starts with NAME runs once before the rounds, untimed (what it "
                             "leaves, say this hour's baselines, is there): e.g. 'baseline refresh', which runs "
                             "hourly, not every pass; repeatable")
    parser.add_argument("--omit", action="append", default=[], metavar="NAME",
                        help="a reader whose name starts with NAME is not run at all (the store keeps what an earlier "
                             "run left, say this hour's baselines); repeatable")
    parser.add_argument("--out", type=Path, help="write a result file like read_scale.py's")
    args = parser.parse_args()
    result = json.loads(args.result.read_text())
    now = datetime.fromisoformat(result["started"])
    store = EmbeddedStore(args.data_dir)
    try:
        started = time.perf_counter()
        applied = migrate(store)  # a store kept from before a migration was added
        migrate_s = time.perf_counter() - started
        print(f"migrations {applied} applied in {migrate_s:.1f} s", flush=True)
        load_before = os.getloadavg()
        with tempfile.TemporaryDirectory() as scratch:
            chosen = [r for r in readers(store, now=now, events=result["events"], out_dir=Path(scratch))
                      if args.kind in ("all", r.group) and not r.name.startswith(tuple(args.omit))]
            for reader in [r for r in chosen if r.name.startswith(tuple(args.skip))]:
                print(f"skipped (run once, untimed): {reader.name}", flush=True)
                reader.run()
                chosen.remove(reader)
            timings = time_readers(chosen, runs=args.runs)
            for timing in timings:
                t = timing.as_dict()
                print(f"| {t['name']} | {t['window']} | {t['median_s'] * 1000:.0f} ms | {t['p95_s'] * 1000:.0f} ms "
                      f"| CPU {timing.cpu_median_s * 1000:.0f} ms |", flush=True)
        if args.out:
            storage = [dict(r, bytes_per_event=round(r["bytes"] / result["events"], 1))
                       for r in store.query(STORAGE_SQL).dicts()]
            args.out.write_text(json.dumps(result | {
                "command": "bench/read_scale_retime.py " + " ".join(sys.argv[1:]),
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "runs": args.runs,
                "migrations_applied": applied, "migrate_s": round(migrate_s, 1),
                "load_average_before_after": [list(load_before), list(os.getloadavg())], "storage": storage,
                "readers": [t.as_dict() for t in timings]}, indent=2) + "\n")
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
