"""What each query of a command reads: rows, bytes and time, on a store `bench/read_scale.py --keep` left behind.

    python bench/command_reads.py DIR --result /work/scratch/rs/rs5m_load.json --command report

For issue 17: a command should read rows bounded by keys × periods, not by events. This runs
``report --since 7d``, ``advise --since 30d`` or ``export focus --since 1d`` once (after a warm-up
run) at the loaded history's end and prints, per query, the rows and bytes the engine read
(``EXPLAIN ESTIMATE``: the parts' rows the engine would read, per table) and its elapsed time,
slowest first; the query's first words name it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from spendstream.advisor import advise
from spendstream.focus import export_focus
from spendstream.report import write_report
from spendstream.sinks import embedded
from spendstream.sinks.embedded import EmbeddedStore

_seen: list[tuple[float, str, dict | None]] = []
_plain_output = embedded._output


def _counted_output(session, sql, fmt, params):  # the same call, with chdb's counters kept
    try:
        result = session.query(sql, fmt, params=params or None)
    except Exception as exc:
        raise embedded.StoreError(str(exc)) from exc
    _seen.append((result.elapsed(), sql, params))
    return result.bytes() if hasattr(result, "bytes") else str(result).encode()


def _name(sql: str) -> str:
    """A query's first words and the tables it names: enough to tell which question it is."""
    tables = sorted(set(re.findall(r"FROM (\w+)", sql)))
    words = " ".join(sql.split())[:70]
    return f"{words} … [{', '.join(tables)}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--result", type=Path, required=True, help="the JSON the loading run wrote")
    parser.add_argument("--command", choices=("report", "advise", "focus"), required=True)
    args = parser.parse_args()
    now = datetime.fromisoformat(json.loads(args.result.read_text())["started"])
    store = EmbeddedStore(args.data_dir)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            embedded._output = _counted_output
            run = {"report": lambda: write_report(store, now - timedelta(days=7), now, Path(scratch) / "r.html"),
                   "advise": lambda: advise(store, now - timedelta(days=30), now),
                   "focus": lambda: export_focus(store, now - timedelta(days=1), now, Path(scratch) / "f.csv")}
            run[args.command]()  # warm-up
            _seen.clear()
            started = time.perf_counter()
            run[args.command]()
            total = time.perf_counter() - started
            embedded._output = _plain_output
        print(f"{args.command}: {total:.2f} s in all, {sum(s[0] for s in _seen):.2f} s in {len(_seen)} queries")
        for elapsed, sql, params in sorted(_seen, key=lambda s: -s[0]):
            reads = store.query("EXPLAIN ESTIMATE " + sql.replace(" FORMAT JSONCompact", ""), params).rows
            print(f"{elapsed * 1000:8.0f} ms  {_name(sql)}")
            for _, table, parts, rows, _ in reads:
                print(f"{'':12}{table}: {int(rows):,} rows ({parts} parts)")
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
