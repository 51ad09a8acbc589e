"""The once-per-group work (rollup maintenance, detection, alert delivery) runs on the group's leader,
moves to another worker when the leader goes, and no alert reaches a receiver twice on the way.

The integration tests run three worker processes on one `spendstream store` host against a real
broker (tansu) and a local webhook receiver; alerts come from the workers' own detection (a
budget crossed by the events the test emits). A kill -9 hands over in about ten seconds (faust's
session timeout is 6 s).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from spendstream.alerting.cycle import AlertCycle, AlertingConfig
from spendstream.alerting.delivery import AlertRouting, Notifier, Route, store_new_alerts
from spendstream.alerting.destinations import Destination
from spendstream.demo.worker_process import StoreHostProcess, WorkerProcess
from spendstream.emitter import Emitter
from spendstream.kafka_admin import ensure_topics
from spendstream.localbroker import free_port
from spendstream.schemas import UsageEvent
from spendstream.schemas.alert import Alert
from spendstream.settings import Settings
from spendstream.sinks.store import StoreError, query_result

pytestmark = pytest.mark.integration
RUN = uuid.uuid4().hex[:8]


class Receiver:
    """A webhook receiver that records every alert it is sent. The first request for which ``hold(alerts)`` is
    true waits for ``release``, then gets ``held_status``; every other request gets 200 at once."""

    def __init__(self, hold: Callable[[list[dict]], bool] = lambda alerts: False, held_status: int = 200) -> None:
        self.received: list[tuple[float, dict]] = []   # (monotonic arrival, alert)
        self.holding = threading.Event()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                alerts = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["alerts"]
                receiver.received.extend((time.monotonic(), a) for a in alerts)
                status = 200
                if hold(alerts) and not receiver.holding.is_set():  # the first such request only
                    receiver.holding.set()
                    receiver.release.wait(30)
                    status = held_status
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"

    def counts(self) -> Counter[tuple[str, str]]:
        return Counter((a["dedup_key"], a["state"]) for _, a in self.received)

    def keys_starting(self, prefix: str) -> list[str]:
        return [a["dedup_key"] for _, a in self.received if a["dedup_key"].startswith(prefix)]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def _wait(what: str, condition: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s")


# --- in-process: the notifier's fence and its records ---------------------------------------------------

def _stored(store, tag: str, n: int) -> list[Alert]:
    at = datetime.now(timezone.utc).replace(microsecond=0)
    alerts = [Alert(kind="budget_burn", severity="critical", state="firing", subject=f"team={tag}",
                    window_start=at, window_end=at + timedelta(days=1), observed=Decimal(2), expected=Decimal(1),
                    dedup_key=f"budget:{tag}:{k}", message="over budget", created_at=at) for k in range(n)]
    assert store_new_alerts(store, alerts) == n
    return alerts


def _routing(tag: str, **urls: str) -> AlertRouting:
    return AlertRouting(destinations=[Destination(name=f"{name}-{tag}", kind="webhook", url=url)
                                      for name, url in urls.items()],
                        routes=[Route(destination=f"{name}-{tag}", subjects=[tag]) for name in urls])


def test_a_notifier_that_may_not_send_sends_nothing_and_leaves_every_delivery_due(embedded_store) -> None:
    tag = f"fenced-{uuid.uuid4().hex[:8]}"
    _stored(embedded_store, tag, 2)
    receiver, leading = Receiver(), threading.Event()
    try:
        notifier = Notifier(embedded_store, _routing(tag, hook=receiver.url), may_send=leading.is_set)
        fenced = notifier.run_pass()
        leading.set()
        resumed = notifier.run_pass()
    finally:
        receiver.close()
    assert (fenced.delivered, fenced.pending) == (0, 2)
    assert (resumed.delivered, resumed.pending) == (2, 0)
    assert sorted(receiver.counts().values()) == [1, 1]


def test_each_outcome_is_recorded_while_slower_destinations_are_still_out(embedded_store) -> None:
    """What a crash mid-pass would re-send is only what is in flight, not what a slow neighbour held up."""
    tag = f"early-{uuid.uuid4().hex[:8]}"
    _stored(embedded_store, tag, 1)
    fast, slow = Receiver(), Receiver(hold=lambda alerts: True)
    states = ("SELECT destination, outcome FROM alert_deliveries FINAL WHERE destination LIKE {t:String} "
              "ORDER BY destination")
    try:
        notifier = Notifier(embedded_store, _routing(tag, fast=fast.url, slow=slow.url))
        passing = threading.Thread(target=notifier.run_pass)
        passing.start()
        assert slow.holding.wait(10)
        recorded = _wait("the fast destination's outcome recorded",
                         lambda: query_result(embedded_store, states, {"t": f"%-{tag}"}).rows, timeout_s=10)
        still_out = passing.is_alive()
        slow.release.set()
        passing.join(30)
    finally:
        fast.close()
        slow.close()
    assert still_out and recorded == [[f"fast-{tag}", "delivered"]]
    assert query_result(embedded_store, states, {"t": f"%-{tag}"}).rows == [
        [f"fast-{tag}", "delivered"], [f"slow-{tag}", "delivered"]]


def test_a_stale_retry_from_a_deposed_runner_does_not_reopen_a_delivery_another_settled(embedded_store) -> None:
    """A leader stalled with a request out, a new leader delivering the alert meanwhile, then the stalled
    request failing: recording that retry as the newest state would make the alert due again."""
    tag = f"stale-{uuid.uuid4().hex[:8]}"
    _stored(embedded_store, tag, 1)
    receiver = Receiver(hold=lambda alerts: True, held_status=503)
    routing = _routing(tag, hook=receiver.url)
    try:
        old_leader = threading.Thread(target=Notifier(embedded_store, routing).run_pass)
        old_leader.start()
        assert receiver.holding.wait(10)
        assert Notifier(embedded_store, routing).run_pass().delivered == 1  # the new leader
        receiver.release.set()
        old_leader.join(30)
        later = datetime.now(timezone.utc) + timedelta(hours=1)  # any retry would be due by then
        again = Notifier(embedded_store, routing, clock=lambda: later).run_pass()
    finally:
        receiver.close()
    assert again.delivered == 0 and len(receiver.received) == 2  # the held one, and the new leader's
    state = query_result(embedded_store, "SELECT outcome FROM alert_deliveries FINAL WHERE destination = {d:String}",
                         {"d": f"hook-{tag}"}).rows
    assert state == [["delivered"]]


class _RawReadsFail:
    """The store, except that reading raw usage fails (as a dropped connection would, for the detectors only)."""

    def __init__(self, store) -> None:
        self.store = store

    def query_text(self, sql: str, params: dict | None = None, fmt: str = "PrettyCompact") -> str:
        if "usage_events" in sql:
            raise StoreError("connection reset while reading usage_events")
        return self.store.query_text(sql, params, fmt)

    def query_arrow(self, sql: str, params: dict | None = None) -> Any:  # the detectors' wide windows come as Arrow
        if "usage_events" in sql:
            raise StoreError("connection reset while reading usage_events")
        return self.store.query_arrow(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_a_failing_detector_costs_its_own_alerts_not_the_delivery_of_stored_ones(embedded_store) -> None:
    tag = f"isolated-{uuid.uuid4().hex[:8]}"
    _stored(embedded_store, tag, 1)
    receiver = Receiver()
    try:
        config = AlertingConfig(routing=_routing(tag, hook=receiver.url))
        done = AlertCycle(_RawReadsFail(embedded_store), config, pass_deadline_s=10).run()
    finally:
        receiver.close()
    # no budgets: nothing to read; cost drift reads raw events too. The baselines read raw only for hours not
    # yet learned: after another test in this session refreshed this hour on the shared store, they have none
    raw_readers = {"retry storms", "spend anomalies", "cost drift"}
    assert raw_readers <= set(done.detector_errors) <= raw_readers | {"baselines"}
    assert "connection reset" in done.detector_errors["retry storms"]
    assert done.delivery is not None and done.delivery.delivered == 1
    assert list(receiver.counts().values()) == [1]


# --- a worker group on one store host --------------------------------------------------------------------

class Group:
    """Three workers sharing a store host, each with its health page on a known port."""

    def __init__(self, broker: str, root: Path, receiver: Receiver) -> None:
        self.root, self.receiver, self.broker = root, receiver, broker
        self.host = StoreHostProcess(root / "data", log_path=root / "store.log")
        self.settings = Settings(data_dir=root / "data", usage_topic=f"leader.{RUN}", gpu_topic=f"leader.{RUN}.gpu",
                                 ledger_topic=f"leader.{RUN}.ledger", consumer_group=f"leader-{RUN}",
                                 topic_partitions=2, batch_max_wait_s=0.2)
        routes, budgets = root / "routes.yaml", root / "budgets.yaml"
        routes.write_text(json.dumps({"destinations": [{"name": "hook", "kind": "webhook", "url": receiver.url}],
                                      "routes": [{"destination": "hook", "kinds": ["budget_burn"]}]}))
        budgets.write_text(json.dumps({"budgets": [
            {"name": name, "team": self.team(name), "period": "monthly", "amount_usd": "0.000001", "thresholds": [100]}
            for name in ("first", "crash", "handover")]}))
        self.ports = [free_port() for _ in range(3)]
        self.env = {"SPENDSTREAM_ALERT_ROUTES": str(routes), "SPENDSTREAM_BUDGETS_FILE": str(budgets),
                    "SPENDSTREAM_DETECT_INTERVAL_S": "0.5",
                    # the handover test holds a request longer than the default lets a sender wait
                    "SPENDSTREAM_ALERT_REQUEST_TIMEOUT_S": "25"}
        self.workers: list[WorkerProcess] = []

    @staticmethod
    def team(budget: str) -> str:
        return f"{RUN}-{budget}"

    def start(self) -> None:
        self.host.start()
        ensure_topics(self.broker, {self.settings.usage_topic: 2, self.settings.gpu_topic: 1,
                                    self.settings.ledger_topic: 1})
        settings = self.settings.model_copy(update={"store_url": self.host.url})
        self.workers = [WorkerProcess(settings, bootstrap_servers=self.broker, log_path=self.root / f"worker{k}.log",
                                      extra_env=self.env | {"SPENDSTREAM_WEB_PORT": str(port)})
                        for k, port in enumerate(self.ports)]
        for worker in self.workers:
            worker.start()

    def leader(self, timeout_s: float = 60.0) -> int:
        """The one live worker whose health page says it leads (waits for the group to settle on one)."""
        def the_one() -> list[int] | None:
            leading = [k for k, w in enumerate(self.workers)
                       if w.pid is not None and _health(self.ports[k]).get("leader")]
            return leading if len(leading) == 1 else None
        return _wait("exactly one worker leads", the_one, timeout_s)[0]

    def emit(self, budget: str, n: int = 5) -> None:
        with Emitter(bootstrap_servers=self.broker, topic=self.settings.usage_topic, ledger_topic=None,
                     register_atexit=False) as emitter:
            for k in range(n):
                emitter.emit(UsageEvent(event_id=f"{RUN}-{budget}-{k}", provider="openai", model="gpt-4o-mini",
                                        input_tokens=1000, output_tokens=100, team=self.team(budget),
                                        feature="leader-test"))
            assert emitter.flush(30)

    def rolled_up(self, budget: str) -> int:
        return int(query_result(self.host.query_client(timeout_s=10), "SELECT sum(attempts) FROM usage_minutes "
                                "FINAL WHERE team = {t:String}", {"t": self.team(budget)}).scalar() or 0)

    def outcomes(self, budget: str) -> tuple[str, int] | None:
        """(outcome, attempts) of the delivery of ``budget``'s alert, as ``alert_deliveries`` has it."""
        rows = query_result(self.host.query_client(timeout_s=10), "SELECT outcome, attempts FROM alert_deliveries "
                            "FINAL WHERE destination = 'hook' AND startsWith(dedup_key, {k:String})",
                            {"k": f"budget:{budget}:"}).rows
        return (rows[0][0], int(rows[0][1])) if len(rows) == 1 else None

    def stop(self) -> list[int | None]:
        codes = [worker.stop() for worker in self.workers]
        self.host.stop()
        return codes


def _health(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/spendstream/health/", timeout=2) as answer:
            return json.loads(answer.read())
    except (OSError, ValueError):
        return {}


@pytest.fixture(scope="module")
def group(broker, tmp_path_factory) -> Iterator[Group]:
    receiver = Receiver(hold=lambda alerts: any(a["dedup_key"].startswith("budget:handover:") for a in alerts))
    group = Group(broker, tmp_path_factory.mktemp("leader"), receiver)
    try:
        group.start()
        yield group
    finally:
        group.stop()
        receiver.close()


def test_a_killed_leaders_work_continues_on_another_worker_and_no_alert_is_delivered_twice(group) -> None:
    group.emit("first")
    _wait("the first budget alert delivered", lambda: group.receiver.keys_starting("budget:first:"), timeout_s=60)
    _wait("the first minutes rolled up", lambda: group.rolled_up("first") == 5, timeout_s=30)
    # Killed before its outcome is recorded, a leader's delivery is sent again by the next (the window this
    # design leaves open, one request and one insert long): kill only once it is recorded.
    _wait("the first delivery recorded", lambda: group.outcomes("first") == ("delivered", 1), timeout_s=10)

    leader = group.leader()
    group.workers[leader].kill()  # kill -9: no shutdown, no handover
    killed_at = time.monotonic()
    group.emit("crash")
    _wait("the survivor delivered the next alert", lambda: group.receiver.keys_starting("budget:crash:"), 60)
    handover_s = time.monotonic() - killed_at
    _wait("the survivor's rollups have the new minutes", lambda: group.rolled_up("crash") == 5, timeout_s=30)
    assert group.leader() != leader
    time.sleep(2)  # a few more passes on the new leader: nothing goes out again

    counts = group.receiver.counts()
    assert {key: n for key, n in counts.items() if not key[0].startswith("budget:handover:")} == {
        (group.receiver.keys_starting(f"budget:{b}:")[0], "firing"): 1 for b in ("first", "crash")}
    assert group.outcomes("first") == group.outcomes("crash") == ("delivered", 1)
    print(f"kill -9 of the leader -> the next alert delivered by another worker: {handover_s:.1f} s")


def test_a_leader_that_shuts_down_mid_delivery_hands_over_without_the_next_leader_sending_it_again(group) -> None:
    """The receiver holds the leader's request; the leader is stopped (SIGTERM) meanwhile. Without the
    tenure's wait, the leader would leave the group at once and the next leader, seeing the delivery
    unsettled, would send it again while the first request is still out."""
    leader = group.leader()
    group.emit("handover")
    assert group.receiver.holding.wait(60), "the leader never sent the handover alert"
    codes: list[int | None] = []
    stopping = threading.Thread(target=lambda: codes.append(group.workers[leader].stop()))
    stopping.start()
    # Long enough for another worker to lead and pass several times had the leader left the group at once
    # (a rebalance after a LeaveGroup takes ~10 s on tansu); meanwhile nobody else may lead.
    others = [k for k in range(len(group.workers)) if k != leader and group.workers[k].pid is not None]
    held_until = time.monotonic() + 12
    led_meanwhile = set()
    while time.monotonic() < held_until:
        led_meanwhile |= {k for k in others if _health(group.ports[k]).get("leader")}
        time.sleep(0.5)
    group.receiver.release.set()
    stopping.join(60)
    new_leader = group.leader()
    time.sleep(2)  # several passes of the new leader

    assert led_meanwhile == set() and new_leader != leader and codes == [0]
    assert len(group.receiver.keys_starting("budget:handover:")) == 1
    assert group.outcomes("handover") == ("delivered", 1)
