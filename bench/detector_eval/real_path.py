"""One run through the real path: events -> process -> a migrated chdb store -> rollups -> what `notify` runs
(``AlertCycle``: hourly baselines, budgets, storms, anomalies, then delivery) every 5 simulated minutes ->
a Slack and a PagerDuty receiver on 127.0.0.1. Beside it, the aggregate harness on the same world.

    PYTHONPATH=. .venv/bin/python -m bench.detector_eval.real_path [--shape conv] [--seed 1] [--hours 24]

The world is the harness's at a tenth of the volume (60 leaves), as events: one per attempt, failed attempts
(HTTP 500) before their retry, the longest request of a minute as long as the world's ``max_attempt`` (``spread``; a
request retried across minutes is a new request id each minute), loops as repeats of one prompt fingerprint and size,
sizes from the trace and prices from the catalog (gpt-4o-mini, gpt-4o, claude-sonnet-4-5, gemini-2.5-flash by the
leaf's price tier; model switches are not replayed). Ten days of history are loaded, then ``--hours`` of the
evaluated week are replayed pass by pass.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections import Counter
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import orjson

from bench.detector_eval import rules_noise
from bench.detector_eval.traces import load
from bench.detector_eval.traffic import DAY, PRICES, World, generate
from spendstream.agents.stages import process
from spendstream.alerting.cycle import AlertCycle, AlertingConfig
from spendstream.alerting.delivery import AlertRouting, Route
from spendstream.alerting.destinations import Destination
from spendstream.batches import SourceRecord
from spendstream.pricing import Pricer
from spendstream.sinks import rollups
from spendstream.sinks.embedded import EmbeddedStore
from spendstream.sinks.migrations import migrate
from spendstream.sinks.rows import usage_table

MODELS = {0.2: ("openai", "gpt-4o-mini"), 1.0: ("openai", "gpt-4o"), 1.5: ("anthropic", "claude-sonnet-4-5"),
          0.4: ("google", "gemini-2.5-flash")}


class Receiver:
    """Records every POST body (the destinations' side)."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                outer.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def spread(failed: int, requests: int, max_attempt: int) -> list[int]:
    """A minute's failed attempts per request: the first as long as the minute's longest (``max_attempt``), the rest
    one at a time over the others, none longer (a quiet storm's few requests fail several times each, a busy
    feature's many once). More failures than that allows (a request retried across minutes, ``loop_attempts``,
    whose ``max_attempt`` counts its earlier minutes too) go on round the requests."""
    fails = [0] * requests
    if not requests:
        return fails
    cap = max(max_attempt - 1, 1)
    fails[0] = min(cap, failed)
    left = failed - fails[0]
    while left > 0:
        for i in [i for i in range(requests) if fails[i] < cap] or range(requests):
            if left == 0:
                break
            fails[i] += 1
            left -= 1
    return fails


def events(world: World, trace, start: int, end: int, rng: np.random.Generator):
    """The world's minutes [start, end) as usage events, a day at a time."""
    price_of = {leaf: PRICES[int(rng.integers(0, len(PRICES)))] for leaf in range(len(world.leaves))}
    n = 0
    for day in range(start, end, DAY):
        batch = []
        for leaf, who in enumerate(world.leaves):
            provider, model = MODELS[price_of[leaf]]
            base = {"provider": provider, "model": model, "team": who.team, "feature": who.feature,
                    "customer": who.customer}
            for minute in np.flatnonzero(world.requests[leaf, day:min(day + DAY, end)] > 0):
                t = day + int(minute)
                at = rules_noise.at(t)
                ok = int(world.requests[leaf, t] - world.repeats[leaf, t])
                fails = spread(int(world.failed[leaf, t]), ok, int(world.max_attempt[leaf, t]))
                for k in range(ok):
                    n += 1
                    i = int(rng.integers(0, len(trace.input_tokens)))
                    sizes = {"input_tokens": int(trace.input_tokens[i]), "output_tokens": int(trace.output_tokens[i])}
                    ts = (at + timedelta(seconds=float(rng.uniform(0, 59)))).isoformat()
                    batch.extend({**base, **sizes, "event_id": f"e{n}a{a}", "request_id": f"r{n}", "ts": ts,
                                  "attempt": a, "status": "error", "http_status": 500} for a in range(1, fails[k] + 1))
                    batch.append({**base, **sizes, "event_id": f"e{n}", "request_id": f"r{n}", "ts": ts,
                                  "attempt": fails[k] + 1})
                for k in range(int(world.repeats[leaf, t])):  # an agent loop: one prompt again, new request ids
                    n += 1
                    batch.append({**base, "input_tokens": 4321, "output_tokens": 99, "prefix_fingerprint": "loop",
                                  "event_id": f"e{n}", "request_id": f"r{n}",
                                  "ts": (at + timedelta(seconds=k)).isoformat()})
        yield batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", default="conv")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hours", type=int, default=24)
    args = parser.parse_args()
    trace = load(args.shape)
    world = generate(trace, args.seed, leaves=60, peak_rate=30.0)
    rng = np.random.default_rng(args.seed)
    # replay from half an hour before the first incident that is not a creep (creeps start with the week)
    begin = min(i.start for i in world.incidents if i.kind != "creep") // 60 * 60 - 60
    first, last = begin - 10 * DAY, begin + args.hours * 60
    slack, pagerduty = Receiver(), Receiver()
    with tempfile.TemporaryDirectory() as tmp:
        store = EmbeddedStore(Path(tmp) / "data")
        try:
            migrate(store)
            started, stored = time.monotonic(), 0
            for batch in events(world, trace, first, last, rng):
                rows = usage_table(process([SourceRecord("usage", 0, 0, orjson.dumps(batch))], Pricer()))
                store.insert_arrow("usage_events", rows)
                stored += rows.num_rows
            rollups.maintain(store, now=rules_noise.at(world.minutes), max_periods=1_000_000, quiet_s=0,
                             busy_every_s=0)
            print(f"stored {stored} events ({time.monotonic() - started:.0f} s, rollups maintained)")
            routing = AlertRouting(
                destinations=[Destination(name="slack", kind="slack", url=slack.url),
                              Destination(name="oncall", kind="pagerduty", url=pagerduty.url, routing_key="K")],
                routes=[Route(destination="slack"), Route(destination="oncall", min_severity="error")])
            clock = {"now": rules_noise.at(begin)}
            cycle = AlertCycle(store, AlertingConfig(routing=routing), pass_deadline_s=10,
                               clock=lambda: clock["now"])
            started, errors = time.monotonic(), Counter()
            passes = 0
            for t in range(begin + 5, last + 1, 5):
                clock["now"] = rules_noise.at(t)
                done = cycle.run()
                errors.update(done.detector_errors)
                passes += 1
            seconds = time.monotonic() - started
            alerts = store.query("SELECT kind, state, severity, correlated_with != '' AS attached, count() "
                                 "FROM alerts FINAL GROUP BY kind, state, severity, attached "
                                 "ORDER BY kind, state, severity, attached").rows
        finally:
            store.close()
    slack.close()
    pagerduty.close()
    storms = rules_noise.retries(world)
    harness = [f for f in rules_noise.spend(world, storms=storms) + storms if begin < f.minute <= last]
    within = [f"{i.kind}@{rules_noise.at(i.start):%a %H:%M}" for i in world.incidents if begin <= i.start < last]
    print("incidents starting in the replayed hours:", within)
    print(f"{passes} passes over {args.hours} h in {seconds:.0f} s ({seconds / passes:.2f} s a pass); "
          f"detector errors: {dict(errors) or 'none'}")
    print("alerts stored (kind, state, severity, attached to another incident, n):", alerts)
    per_key = Counter(b["dedup_key"] for b in pagerduty.bodies)
    print(f"messages: slack {len(slack.bodies)}, pagerduty {len(pagerduty.bodies)} "
          f"({Counter(b['event_action'] for b in pagerduty.bodies)}; most events for one dedup key: "
          f"{max(per_key.values(), default=0)})")
    print("the aggregate harness on the same world and hours (kind, state, attached):",
          sorted(Counter((f.kind, f.state, bool(f.part_of)) for f in harness).items()))


if __name__ == "__main__":
    main()
