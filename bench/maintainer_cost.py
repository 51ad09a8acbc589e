"""What the rollup maintainer costs the write path, without a broker: writes and maintenance passes, timed apart.

    PYTHONPATH=<checkout> .venv/bin/python bench/maintainer_cost.py [--events 500000] [--batch 100000]

In one process, on a fresh embedded store: the throughput run's events (bench/workload.py:
the trace's hour replayed, each copy a minute later, so every batch touches the same hour
of minutes, as a backlog of it does) are written batch by batch through the worker's
``SinkWriter`` (conflict check, insert, marks), and after each batch the maintainer runs
one pass with the worker's defaults, as its 1 s leader timer would between the ~1 s
inserts of a drain (in the worker both share one chdb session, so a pass's time is time
the writer waits). Then the backlog goes quiet and passes run until nothing is pending
(the catch-up), and then idle passes (the bookkeeping alone). Prints seconds per phase;
run it for two checkouts back to back and compare.

``--live``: each batch is retimed, as it is written, to the second before it (fresh ids, ``ts`` spread
over that second; ``--behind-s``: the second ending that long before it, a worker that far behind, so a
closed minute is still marked for that long): a drain of the live minutes, which the maintainer keeps
from their 10-second slices, then the catch-up once they are quiet. Besides seconds, every phase reports
what the passes cost the store in statements, rows read from storage and process CPU
(bench/store_tally.py): on a machine that other sessions load, compare those.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).parent))

from maintainer_lag import _fresh  # noqa: E402
from store_tally import Cost, tally  # noqa: E402
from workload import base_events, replay  # noqa: E402

import spendstream  # noqa: E402
from spendstream.agents.stages import process  # noqa: E402
from spendstream.batches import SourceRecord  # noqa: E402
from spendstream.pricing import Pricer  # noqa: E402
from spendstream.sinks import rollups  # noqa: E402
from spendstream.sinks.embedded import EmbeddedStore  # noqa: E402
from spendstream.sinks.migrations import migrate  # noqa: E402
from spendstream.sinks.writer import SinkWriter  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--idle-passes", type=int, default=20)
    parser.add_argument("--live", action="store_true", help="each batch retimed to the second before its write")
    parser.add_argument("--behind-s", type=float, default=0.0,
                        help="with --live: to the second ending this long before its write (a worker behind)")
    args = parser.parse_args()
    pricer = Pricer()
    events = [e.model_dump(mode="json") for e in replay(base_events(50_000), args.events, run="cost")]
    batches = [process([SourceRecord("usage", k, 0, orjson.dumps(events[i:i + 1000]))
                        for k, i in enumerate(range(start, min(start + args.batch, len(events)), 1000))], pricer)
               for start in range(0, len(events), args.batch)]
    result: dict[str, object] = {"code": str(Path(spendstream.__file__).parent.parent), "events": len(events),
                                 "live": args.live, "behind_s": args.behind_s,
                                 "load_average_1m_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        store = EmbeddedStore(Path(tmp) / "data")
        migrate(store)
        writer = SinkWriter(store)
        write_s = pass_s = 0.0
        recomputed, written = 0, 0
        during, catching_up, idle = Cost(), Cost(), Cost()
        for batch in batches:
            if args.live:
                now = time.time()
                end = now - args.behind_s
                batch = _fresh(batch, written, [end - 1 + (i + 1) / batch.num_events
                                                for i in range(batch.num_events)])
                written += batch.num_events
            started = time.perf_counter()
            asyncio.run(writer.write(batch))
            write_s += time.perf_counter() - started
            started = time.perf_counter()
            with tally() as cost:
                recomputed += rollups.maintain(store, now=datetime.now(timezone.utc)).periods
            during.add(cost)
            pass_s += time.perf_counter() - started
        result |= {"write_s": write_s, "maintain_during_s": pass_s, "recomputed_during": recomputed,
                   "events_per_s_write_and_maintain": len(events) / (write_s + pass_s)} | during.as_dict("during")
        started, passes, catch_up = time.perf_counter(), 0, 0
        time.sleep(1.1)  # the backlog went quiet
        while True:
            with tally() as cost:
                done = rollups.maintain(store, now=datetime.now(timezone.utc))
            catching_up.add(cost)
            passes += 1
            catch_up += done.periods
            if not store.query("SELECT count() FROM rollup_watermarks WHERE usage_minutes < toStartOfMinute(now()) "
                               "OR customer_hours < toStartOfHour(now()) OR usage_hours < toStartOfHour(now())"
                               ).scalar() or passes > 200:
                break
            time.sleep(0.2)
        result |= {"catch_up_s": time.perf_counter() - started - 1.1, "catch_up_passes": passes,
                   "recomputed_catch_up": catch_up} | catching_up.as_dict("catch_up")
        started = time.perf_counter()
        for _ in range(args.idle_passes):
            with tally() as cost:
                rollups.maintain(store, now=datetime.now(timezone.utc))
            idle.add(cost)
        result["idle_pass_ms"] = (time.perf_counter() - started) / args.idle_passes * 1000
        result |= {k: round(v / args.idle_passes, 4) for k, v in idle.as_dict("idle_per_pass").items()
                   if isinstance(v, (int, float))}
        raw = store.query("SELECT count() FROM usage_events FINAL").scalar()
        rolled = store.query("SELECT sum(attempts) FROM usage_minutes FINAL").scalar()
        result["exact"] = int(raw) == int(rolled)
        store.close()
    result["load_average_1m_end"] = os.getloadavg()[0]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
