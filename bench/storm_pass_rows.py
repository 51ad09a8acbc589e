"""The retry-storm pass before and after its windows moved off raw (issue 17): time and rows read, interleaved.

    .venv/bin/python bench/storm_pass_rows.py COPY_OF_A_READ_SCALE_STORE --result LOAD.json \
        --before /work/main/spendstream/detect/retry_storm.py --runs 5

``--before`` is a file holding the pass as it was (another checkout's ``retry_storm.py``),
loaded beside this checkout's. Both run on the same store at the same "now" (the loaded
history's end), alternately, so that the machine's load falls on both alike. ``--stretch 10``
makes the windows ten times as long: the rows a window of raw holds at ten times the density
(a rollup's rows grow less than that with density than with length, so this flatters neither). Rows read are
the engine's own count (chdb's ``storage_rows_read`` of each result, summed over the queries a pass
made), which does not depend on the load.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from spendstream.detect import retry_storm
from spendstream.detect.storm import RetryStormRule
from spendstream.sinks import embedded, rollups
from spendstream.sinks.embedded import EmbeddedStore
from spendstream.sinks.migrations import migrate
from spendstream.sinks.store import StoreError


def _load(path: Path):
    spec = importlib.util.spec_from_file_location("retry_storm_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_READ = [0, 0]  # rows read and queries since the last reset, counted by the wrapper below
_EACH: list[tuple[int, str]] = []  # (rows read, the query's first words) of the last pass


def _counting(session, sql: str, fmt: str, params):
    """``embedded._output``, counting what each query read (chdb's own statistics of the result)."""
    try:
        result = session.query(sql, fmt, params=params or None)
    except Exception as exc:
        raise StoreError(str(exc)) from exc
    _READ[0] += result.storage_rows_read()
    _READ[1] += 1
    _EACH.append((result.storage_rows_read(), " ".join(sql.split())[:90]))
    return result.bytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--result", type=Path, required=True, help="the JSON the loading run wrote")
    parser.add_argument("--before", type=Path, required=True, help="retry_storm.py as it was")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--stretch", type=int, default=1,
                        help="windows this many times as long: as many events a window as traffic this much denser")
    args = parser.parse_args()
    now = datetime.fromisoformat(json.loads(args.result.read_text())["started"])
    passes = {"before": _load(args.before).detect_retry_storms, "after": retry_storm.detect_retry_storms}
    rule = RetryStormRule(window_minutes=10 * args.stretch, slow_minutes=120 * args.stretch)
    store = EmbeddedStore(args.data_dir)
    embedded._output = _counting
    try:
        applied = migrate(store)
        maintained = rollups.maintain(store, now=datetime.now(timezone.utc))  # as a worker's leader would, once
        print(f"migrations {applied} applied, {maintained.periods} periods maintained; load average "
              f"{os.getloadavg()}", flush=True)
        seconds: dict[str, list[float]] = {name: [] for name in passes}
        rows: dict[str, tuple[int, int]] = {}
        for run in range(args.runs + 1):  # the first round warms the caches and is not counted
            for name, detect in passes.items():
                _READ[:] = [0, 0]
                _EACH.clear()
                started = time.perf_counter()
                detect(store, now, rule=rule)
                if run:
                    seconds[name].append(time.perf_counter() - started)
                rows[name] = (_READ[0], _READ[1])
                if run == args.runs:
                    print(name, *(f"  {n:>9,}  {text}" for n, text in _EACH), sep="\n")
        for name in passes:
            print(f"| {name} | {statistics.median(seconds[name]) * 1000:.0f} ms | "
                  f"{min(seconds[name]) * 1000:.0f} ms | {rows[name][0]:,} rows in {rows[name][1]} queries |")
        print(f"load average after {os.getloadavg()}")
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
