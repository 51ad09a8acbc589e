"""What a question costs as history grows: load N events over four weeks, then time every reader.

    python bench/read_scale.py --events 5000000            # -> bench/results/read_scale_5000000.json
    python bench/read_scale.py --compare a.json b.json     # sizes side by side, with growth ratios
    python bench/read_scale.py --reuse DIR                 # time again a store an earlier --keep run left

Loads ``--events`` distinct events (plus 5 % re-delivered duplicates) spread over 28
days ending now into a fresh embedded data directory, migrated as the project
migrates it (bench/read_scale_data.py says what the traffic looks like,
bench/read_scale_load.py how it goes in), waits for ClickHouse's background merges to
settle, checks that ``count() FINAL`` is exactly ``--events``, and reports bytes on disk.
Then every reader (bench/read_scale_readers.py) runs once to warm up and ``--runs``
times timed, round-robin; the JSON keeps every run, the printed table the median and p95.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from read_scale_data import Generator  # noqa: E402
from read_scale_keys import MODELS, PRICED_MODELS  # noqa: E402
from read_scale_load import load, settle  # noqa: E402
from read_scale_readers import readers, time_readers  # noqa: E402

from spendstream.sinks import rollups  # noqa: E402
from spendstream.sinks.embedded import EmbeddedStore  # noqa: E402
from spendstream.sinks.migrations import migrate  # noqa: E402

RESULTS = Path(__file__).parent / "results"
# Raw events now; rollup tables when they come (issue 17): listed by name, whatever they are called.
STORAGE_SQL = """
    SELECT table, sum(rows) AS rows, sum(bytes_on_disk) AS bytes, count() AS parts
    FROM system.parts
    WHERE active AND database = currentDatabase()
      AND (table LIKE 'usage\\_%' OR table LIKE '%\\_rollup' OR table LIKE '%minute%'
           OR table IN ('customer_hours', 'advice_hours', 'prefix_windows'))
    GROUP BY table ORDER BY table"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5_000_000, help="distinct events to load (default 5,000,000)")
    parser.add_argument("--chunk-rows", type=int, default=1_000_000, help="events per insert")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per reader, after one warm-up")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--data-dir", type=Path, help="a new or empty directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the data directory afterwards")
    parser.add_argument("--settle-timeout-s", type=float, default=1_800.0)
    parser.add_argument("--out", type=Path, help="default bench/results/read_scale_<events>.json")
    parser.add_argument("--reuse", type=Path, metavar="DIR",
                        help="time the readers on the store an earlier run kept (--keep --data-dir DIR), without "
                             "loading it again; --events is read from the store, the clock from its newest event")
    parser.add_argument("--only", action="append", metavar="KIND_OR_TITLE",
                        help="time only the readers of this kind (sql, detection, command, cookbook, grafana) or "
                             "whose title contains it; repeat for several (default: every reader)")
    parser.add_argument("--compare", nargs="+", type=Path, metavar="RESULT.json",
                        help="print two (or more) runs side by side with growth ratios, and stop")
    args = parser.parse_args(argv)
    if args.compare:
        if len(args.compare) < 2:
            parser.error("--compare needs two result files or more")
        print(compare_table([json.loads(p.read_text()) for p in args.compare]))
        return 0
    if args.reuse:
        return reuse(args)
    if args.events < 100_000:
        parser.error("--events: at least 100,000 (four weeks of traffic need a few events a minute)")
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="spendstream-read-scale-"))
    if data_dir.exists() and any(data_dir.iterdir()) and args.data_dir:
        parser.error(f"--data-dir {data_dir} is not empty: the benchmark loads a fresh store")
    started = time.perf_counter()
    try:
        result = run(args, data_dir)
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    write(args, result)
    print(f"\n({time.perf_counter() - started:.0f} s in all)")
    return 0


def run(args: argparse.Namespace, data_dir: Path) -> dict:
    store = EmbeddedStore(data_dir)
    try:
        migrate(store)
        end = datetime.now(timezone.utc).replace(microsecond=0)
        generator = Generator(args.events, end=end, seed=args.seed)
        unpriced = [m for m in PRICED_MODELS if not generator.pricer.group_price(
            *m, generator.start, "realtime", None).applied.priced]
        if unpriced:
            raise SystemExit(f"the price catalog no longer prices {unpriced}: "
                             "pick other models in bench/read_scale_keys.py")
        print(f"loading {args.events:,} events over {generator.shape.days} days ending {end:%Y-%m-%d %H:%M} UTC "
              f"into {data_dir}")
        stats = load(store, generator, chunk_rows=args.chunk_rows)
        print(f"  {stats.rows_inserted:,} rows in {stats.wall_s:.0f} s: {stats.rows_per_s:,.0f} rows/s "
              f"(making them {stats.generate_s:.0f} s, of which pricing {stats.price_s:.0f} s; "
              f"inserting {stats.insert_s:.0f} s, overlapped)")
        # the rollups as a worker's leader keeps them: every marked period recomputed (a fresh store's
        # backfill, timed), then the readers use them for all but the newest minute and hour
        started = time.perf_counter()
        while rollups.maintain(store, now=datetime.now(timezone.utc), max_periods=100_000,
                               quiet_s=0, busy_every_s=0).periods:
            pass
        rollup_s = time.perf_counter() - started
        print(f"  rollups recomputed in {rollup_s:.0f} s")
        return measure(args, store, end, generator, load_stats=stats.as_dict(), rollup_s=rollup_s,
                       retries=stats.retries)
    finally:
        store.close()


def measure(args: argparse.Namespace, store: EmbeddedStore, end: datetime, generator: Generator, *,
            load_stats: dict, rollup_s: float | None, retries: int | None = None) -> dict:
    """Settle, check the store holds exactly what was generated, then time every reader."""
    settled = settle(store, timeout_s=args.settle_timeout_s)
    counted = store.query("SELECT count() FROM usage_events FINAL").scalar()
    ledger = store.query("SELECT sum(events) FROM emitter_ledger FINAL").scalar()
    # a generator bug (an id drawn twice, a lost chunk) would skew every number after it
    if not counted == ledger == args.events:
        raise SystemExit(f"usage_events FINAL counts {counted:,} events and the ledger {ledger:,}; "
                         f"{args.events:,} were generated")
    storage = [dict(r, bytes_per_event=round(r["bytes"] / counted, 1))
               for r in store.query(STORAGE_SQL).dicts()]
    every_table = store.query("SELECT concat(database, '.', table) AS table, sum(rows) AS rows, "
                              "sum(bytes_on_disk) AS bytes FROM system.parts WHERE active "
                              "GROUP BY table ORDER BY bytes DESC").dicts()
    cardinality = store.query(
        "SELECT uniqExact(team) AS teams, uniqExact(feature) AS features, uniqExact(customer) AS customers, "
        "uniqExact(model) AS models, uniqExact(service) AS services, countIf(attempt > 1) AS retries, "
        "countIf(NOT priced) AS unpriced FROM usage_events FINAL").dicts()[0]
    if retries is not None and cardinality["retries"] != retries:
        raise SystemExit(f"{cardinality['retries']:,} retries stored, {retries:,} generated")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        chosen = [r for r in readers(store, now=end, events=args.events, out_dir=Path(scratch))
                  if not args.only or any(o == r.group or o in r.name for o in args.only)]
        if not chosen:
            raise SystemExit(f"--only {args.only}: no reader of that kind or title")
        timings = time_readers(chosen, runs=args.runs)
    return {
        "command": "bench/read_scale.py " + " ".join(sys.argv[1:]),
        "started": end.isoformat(), "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "events": args.events, "days": generator.shape.days, "seed": args.seed, "runs": args.runs,
        "machine": machine(), "load_average_before_after": [list(load_before), list(os.getloadavg())],
        "shape": {"teams": generator.shape.teams, "features": generator.shape.features,
                  "customers": generator.shape.customers, "models": len(MODELS),
                  "retry_share": generator.shape.retry_share, "duplicate_share": generator.shape.duplicate_share},
        "stored": cardinality, "load": load_stats, "settle": settled, "rollups_s": rollup_s,
        "storage": storage, "every_table": every_table,
        "readers": [t.as_dict() for t in timings],
    }


def reuse(args: argparse.Namespace) -> int:
    """Time the readers again on a kept store: a quiet re-time, or a newer reader on old history.

    The load is not repeated, so the result has no load numbers. The history's end is
    its newest event rounded up to the second: the generator clips every event to one
    millisecond before ``end``, a whole second.
    """
    if not (args.reuse / "metadata").is_dir():
        raise SystemExit(f"--reuse {args.reuse}: no kept store there (run with --keep --data-dir first)")
    store = EmbeddedStore(args.reuse)
    try:
        newest_s = int(store.query("SELECT toUnixTimestamp(max(ts)) FROM usage_events").scalar())
        end = datetime.fromtimestamp(newest_s + 1, timezone.utc)
        args.events = int(store.query("SELECT sum(events) FROM emitter_ledger FINAL").scalar())
        print(f"timing the readers on {args.events:,} events kept in {args.reuse}, history ending "
              f"{end:%Y-%m-%d %H:%M:%S} UTC")
        result = measure(args, store, end, Generator(args.events, end=end, seed=args.seed),
                         load_stats={"reused": str(args.reuse)}, rollup_s=None)
    finally:
        store.close()
    write(args, result)
    return 0


def write(args: argparse.Namespace, result: dict) -> None:
    """The result to ``--out`` (default bench/results/read_scale_<events>.json), and its table printed."""
    out = args.out or RESULTS / f"read_scale_{args.events}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}\n")
    print(result_table(result))


def machine() -> dict:
    import chdb

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    memory_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal"))
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(memory_kib / 2**20, 1),
            "python": platform.python_version(), "chdb": chdb.__version__, "storage": "embedded chdb"}


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def result_table(result: dict) -> str:
    loaded = (f"load {result['load']['rows_per_s']:,} rows/s" if "rows_per_s" in result["load"]
              else f"store reused from {result['load'].get('reused')}")
    lines = [f"{result['events']:,} events over {result['days']} days; {loaded}",
             "", "| reader | kind | window | median | p95 |", "|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['group']} | {r['window']} | {_seconds(r['median_s'])} | {_seconds(r['p95_s'])} |"
              for r in result["readers"]]
    lines += ["", "| table | rows | bytes on disk | bytes per retained event |", "|---|---|---|---|"]
    lines += [f"| {s['table']} | {s['rows']:,} | {s['bytes'] / 2**20:,.1f} MiB | {s['bytes_per_event']} |"
              for s in result["storage"]]
    return "\n".join(lines)


def _loaded(run: dict, key: str) -> str:
    """A load number of ``run``, or that it timed a kept store (``--reuse``) and has none."""
    return f"{run['load'][key]:,}" if key in run["load"] else "(store reused)"


def compare_table(runs: list[dict]) -> str:
    """Readers present in every run, smallest history first: the median at each size, the p95 at the
    largest, and how much the median grew to the largest from the next smaller size and from the smallest."""
    runs = sorted(runs, key=lambda r: r["events"])
    sizes = [f"{r['events'] / 1e6:g}M" for r in runs]
    steps = [(len(runs) - 2, len(runs) - 1)] + ([(0, len(runs) - 1)] if len(runs) > 2 else [])
    growth_heads = " | ".join(f"growth {sizes[a]} → {sizes[b]} ({runs[b]['events'] / runs[a]['events']:g}× history)"
                              for a, b in steps)
    lines = ["| reader | kind | window | " + " | ".join(sizes) + f" | {sizes[-1]} p95 | {growth_heads} |",
             "|---|---|---|" + "---|" * (len(runs) + 1 + len(steps))]
    by_run = [{(r["group"], r["name"], r["window"]): r for r in run["readers"]} for run in runs]
    for key, r in by_run[-1].items():
        found = [b.get(key) for b in by_run]
        if any(f is None for f in found):
            continue
        growth = [found[b]["median_s"] / found[a]["median_s"] for a, b in steps]
        medians = " | ".join(_seconds(f["median_s"]) for f in found)
        lines.append(f"| {r['name']} | {r['group']} | {r['window']} | {medians} | {_seconds(r['p95_s'])} | "
                     + " | ".join(f"{g:.1f}×" for g in growth) + " |")
    lines += ["", "| | " + " | ".join(sizes) + " |", "|---|" + "---|" * len(runs),
              "| load, rows/s (making, pricing and inserting) | "
              + " | ".join(_loaded(r, "rows_per_s") for r in runs) + " |",
              "| the inserts alone, rows/s | " + " | ".join(_loaded(r, "insert_rows_per_s") for r in runs) + " |"]
    for table in (s["table"] for s in runs[-1]["storage"]):
        per_event = [next((s["bytes_per_event"] for s in r["storage"] if s["table"] == table), None) for r in runs]
        lines.append(f"| {table}, bytes on disk per retained event | " + " | ".join(f"{b}" for b in per_event) + " |")
    lines.append("| load average (1 min) before / after timing | " + " | ".join(
        f"{r['load_average_before_after'][0][0]:.1f} / {r['load_average_before_after'][1][0]:.1f}" for r in runs)
        + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
