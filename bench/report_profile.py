"""Where ``spendstream report --since 7d`` spends its time, on a store `bench/read_scale.py --keep` left behind.

    python bench/report_profile.py DIR --result /work/scratch/rs/read_scale_5000000.json --runs 3

For issue 17 (``report --since 7d`` <= 2 s): the command's wall time split into (a) each query
(chdb's own elapsed time and the wall time around it, which adds parsing the output), (b) chart
rendering (the calls into vl-convert) and (c) the rest (Python: the tables, the page), per run
after a warm-up, at the loaded history's end (where the report runs parts at once, the parts add up
to more than the whole). ``--cli`` also times the whole command in a fresh
process (imports, opening and migrating the store, the report), the way a person runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import vl_convert

from spendstream.report import write_report
from spendstream.sinks import embedded
from spendstream.sinks.embedded import EmbeddedStore

_queries: list[tuple[float, float, str, bool]] = []  # (wall s, engine s, sql, on the main thread)
_renders: list[float] = []
_plain_output = embedded._output
_plain_svg = vl_convert.vegalite_to_svg


def _timed_output(session, sql, fmt, params):
    started = time.perf_counter()
    try:
        result = session.query(sql, fmt, params=params or None)
    except Exception as exc:
        raise embedded.StoreError(str(exc)) from exc
    out = result.bytes() if hasattr(result, "bytes") else str(result).encode()
    _queries.append((time.perf_counter() - started, result.elapsed(), sql,
                     threading.current_thread() is threading.main_thread()))
    return out


def _timed_svg(*args, **kwargs):
    started = time.perf_counter()
    try:
        return _plain_svg(*args, **kwargs)
    finally:
        _renders.append(time.perf_counter() - started)


def _name(sql: str) -> str:
    tables = sorted(set(re.findall(r"FROM (\w+)", sql)))
    return f"{' '.join(sql.split())[:60]} … [{', '.join(tables)}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--result", type=Path, required=True, help="the JSON the loading run wrote")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cli", action="store_true", help="also time `python -m spendstream report` end to end")
    args = parser.parse_args()
    now = datetime.fromisoformat(json.loads(args.result.read_text())["started"])
    since = now - timedelta(days=7)
    print(f"load average {os.getloadavg()}")
    store = EmbeddedStore(args.data_dir)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            embedded._output = _timed_output
            vl_convert.vegalite_to_svg = _timed_svg
            write_report(store, since, now, Path(scratch) / "r.html")  # warm-up
            per_query: dict[str, list[float]] = defaultdict(list)
            for run in range(args.runs):
                _queries.clear()
                _renders.clear()
                started = time.perf_counter()
                write_report(store, since, now, Path(scratch) / "r.html")
                total = time.perf_counter() - started
                q_wall, q_engine, r = sum(q[0] for q in _queries), sum(q[1] for q in _queries), sum(_renders)
                q_main = sum(q[0] for q in _queries if q[3])
                print(f"run {run + 1}: {total:.2f} s; queries {q_wall:.2f} s ({len(_queries)}; engine "
                      f"{q_engine:.2f} s; on the main thread {q_main:.2f} s), rendering {r:.2f} s "
                      f"({len(_renders)} calls), rest {total - q_wall - r:.2f} s (negative: parts ran at once)")
                for wall, _, sql, _ in _queries:
                    per_query[_name(sql)].append(wall)
            embedded._output = _plain_output
            vl_convert.vegalite_to_svg = _plain_svg
        print("per query, median wall ms over the runs, slowest first:")
        for name, walls in sorted(per_query.items(), key=lambda kv: -sorted(kv[1])[len(kv[1]) // 2]):
            print(f"{sorted(walls)[len(walls) // 2] * 1000:8.0f} ms  x{len(walls) // args.runs}  {name}")
    finally:
        store.close()
    if args.cli:
        with tempfile.TemporaryDirectory() as scratch:
            env = os.environ | {"SPENDSTREAM_DATA_DIR": str(args.data_dir)}
            command = [sys.executable, "-m", "spendstream", "report", "--since", since.isoformat(), "--until",
                       now.isoformat(), "--out", str(Path(scratch) / "r.html")]
            for run in range(args.runs):
                started = time.perf_counter()
                subprocess.run(command, env=env, check=True, capture_output=True)
                print(f"cli run {run + 1}: {time.perf_counter() - started:.2f} s")
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "spendstream", "report", "--help"], env=env, check=True,
                           capture_output=True)
            print(f"cli `report --help` (imports and startup): {time.perf_counter() - started:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
