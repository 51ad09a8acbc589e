"""Alert delivery against a real local HTTP receiver: Slack, PagerDuty, signed webhooks, retries, the outbox."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from spendstream.alerting.delivery import AlertRouting, Notifier, Route, Sender
from spendstream.alerting.destinations import SIGNATURE_HEADER, TIMESTAMP_HEADER, Destination, sign
from spendstream.schemas.alert import Alert
from spendstream.sinks.rows import alert_table

pytestmark = pytest.mark.integration
T = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)


class Receiver:
    """Records every POST; answers from a script of (status, headers), then 200."""

    def __init__(self, script: list[tuple[int, dict[str, str]]] | None = None, port: int = 0) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.script = list(script or [])
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((self.path, dict(self.headers), body))
                status, headers = receiver.script.pop(0) if receiver.script else (200, {})
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def bodies(self) -> list[dict]:
        return [json.loads(body) for _, _, body in self.requests]


def _alert(tag: str, n: int = 0, state: str = "firing", kind: str = "retry_storm") -> Alert:
    return Alert(kind=kind, severity="error", state=state, subject=f"feature=checkout-{tag}",
                 window_start=T, window_end=T + timedelta(minutes=5), observed=Decimal("42"), expected=Decimal("3"),
                 dedup_key=f"{kind}:checkout-{tag}:{n}", message=f"42 retries in 5 min, $3.10 burned ({tag})",
                 created_at=T + timedelta(minutes=5, seconds=n))


def _notifier(store, tag: str, destination: Destination, sleeps: list[float] | None = None, **sender) -> Notifier:
    routing = AlertRouting(destinations=[destination],
                           routes=[Route(destination=destination.name, subjects=[f"checkout-{tag}"])])
    waits = sleeps if sleeps is not None else []
    return Notifier(store, routing, Sender(retry_base_s=0.01, sleep=waits.append, **sender))


def test_slack_gets_one_readable_block_kit_message_per_group(embedded_store) -> None:
    tag, receiver = uuid.uuid4().hex[:8], Receiver()
    try:
        embedded_store.insert_arrow("alerts", alert_table([_alert(tag, n) for n in range(5)]))
        notifier = _notifier(embedded_store, tag, Destination(name=f"slack-{tag}", kind="slack",
                                                              url=receiver.url("/hooks/T000/B000/XXXX")))
        assert notifier.deliver_once() == 5
        assert notifier.deliver_once() == 0  # delivered once, never again
    finally:
        receiver.close()
    (message,) = receiver.bodies()  # a storm of five alerts is one message with a count
    assert message["text"].endswith("5 retry storm alerts firing")
    assert message["blocks"][0]["type"] == "header"
    section = message["blocks"][1]
    assert f"feature=checkout-{tag}" in section["text"]["text"] and "$3.10 burned" in section["text"]["text"]
    assert {"*Observed*\n42", "*Expected*\n3"} <= {f["text"] for f in section["fields"]}


def test_pagerduty_triggers_and_resolves_with_the_dedup_key(embedded_store) -> None:
    tag, receiver = uuid.uuid4().hex[:8], Receiver()
    destination = Destination(name=f"pd-{tag}", kind="pagerduty", url=receiver.url("/v2/enqueue"),
                              routing_key="R0UT1NGKEY")
    try:
        embedded_store.insert_arrow("alerts", alert_table([_alert(tag)]))
        assert _notifier(embedded_store, tag, destination).deliver_once() == 1
        embedded_store.insert_arrow("alerts", alert_table([_alert(tag, state="resolved")]))
        assert _notifier(embedded_store, tag, destination).deliver_once() == 1
    finally:
        receiver.close()
    trigger, resolve = receiver.bodies()
    assert (trigger["event_action"], resolve["event_action"]) == ("trigger", "resolve")
    assert trigger["dedup_key"] == resolve["dedup_key"] == f"retry_storm:checkout-{tag}:0"
    assert trigger["routing_key"] == "R0UT1NGKEY" and trigger["payload"]["severity"] == "error"
    assert trigger["payload"]["source"] == "spendstream" and "payload" not in resolve


def test_webhook_is_signed_with_hmac_sha256(embedded_store) -> None:
    tag, receiver = uuid.uuid4().hex[:8], Receiver()
    try:
        embedded_store.insert_arrow("alerts", alert_table([_alert(tag)]))
        _notifier(embedded_store, tag, Destination(name=f"hook-{tag}", kind="webhook", url=receiver.url("/in"),
                                                   secret="s3cret")).deliver_once()
    finally:
        receiver.close()
    ((_, headers, body),) = receiver.requests
    assert headers[SIGNATURE_HEADER] == "sha256=" + sign("s3cret", headers[TIMESTAMP_HEADER], body)
    assert headers[SIGNATURE_HEADER] != "sha256=" + sign("wrong", headers[TIMESTAMP_HEADER], body)
    assert json.loads(body)["alerts"][0]["dedup_key"] == f"retry_storm:checkout-{tag}:0"


def test_retries_500_and_429_honouring_retry_after_but_not_400(embedded_store) -> None:
    tag, sleeps = uuid.uuid4().hex[:8], []
    receiver = Receiver([(500, {}), (429, {"Retry-After": "7"}), (200, {}), (400, {})])
    try:
        embedded_store.insert_arrow("alerts", alert_table([_alert(tag, 0, kind="retry_storm"),
                                                           _alert(tag, 1, kind="spend_anomaly")]))
        notifier = _notifier(embedded_store, tag, Destination(name=f"hook-{tag}", kind="webhook",
                                                              url=receiver.url("/in")), sleeps)
        assert notifier.deliver_once() == 2
    finally:
        receiver.close()
    assert len(receiver.requests) == 4       # 500, 429, 200 for the first group; 400 for the second, once
    assert sleeps[1] == 7.0                  # Retry-After honoured
    outcomes = dict(embedded_store.query(
        "SELECT dedup_key, outcome FROM alert_deliveries FINAL WHERE destination = {d:String}",
        {"d": f"hook-{tag}"}).rows)
    assert outcomes == {f"retry_storm:checkout-{tag}:0": "delivered", f"spend_anomaly:checkout-{tag}:1": "failed"}


def test_no_alert_is_lost_while_the_receiver_is_down(embedded_store) -> None:
    tag = uuid.uuid4().hex[:8]
    down = Receiver()
    port = down.port
    down.close()  # nothing listens: connection refused
    destination = Destination(name=f"slack-{tag}", kind="slack", url=f"http://127.0.0.1:{port}/hook")
    embedded_store.insert_arrow("alerts", alert_table([_alert(tag, n) for n in range(3)]))
    with pytest.raises(TimeoutError, match="still failing"):
        _notifier(embedded_store, tag, destination, give_up_after_s=0.5).deliver_once()
    assert embedded_store.query("SELECT count() FROM alert_deliveries WHERE destination = {d:String}",
                                {"d": destination.name}).scalar() == 0
    receiver = Receiver(port=port)  # back, on the same address
    try:
        assert _notifier(embedded_store, tag, destination).deliver_once() == 3  # the outbox still had them
    finally:
        receiver.close()
    assert len(receiver.requests) == 1 and "3 retry storm alerts" in receiver.bodies()[0]["text"]


def test_urls_and_keys_never_reach_the_logs(embedded_store, caplog) -> None:
    tag = uuid.uuid4().hex[:8]
    receiver = Receiver([(503, {}), (200, {})])
    secret_path = "/hooks/T0SECRET/B0SECRET/abcdef"
    try:
        embedded_store.insert_arrow("alerts", alert_table([_alert(tag)]))
        with caplog.at_level("DEBUG"):
            _notifier(embedded_store, tag, Destination(name=f"slack-{tag}", kind="slack",
                                                       url=receiver.url(secret_path))).deliver_once()
    finally:
        receiver.close()
    assert "503" in caplog.text and "SECRET" not in caplog.text
    assert "SECRET" not in repr(Destination(name="x", kind="slack", url=receiver.url(secret_path)))


def test_notify_command_delivers_from_the_outbox(tmp_path) -> None:
    import os
    import subprocess
    import sys

    receiver = Receiver()
    data = tmp_path / "data"
    seed = ("import sys\nfrom datetime import datetime, timezone\nfrom spendstream.sinks.embedded import EmbeddedStore\n"
            "from spendstream.sinks.migrations import migrate\nfrom spendstream.sinks.rows import alert_table\n"
            "from spendstream.schemas.alert import Alert\ns = EmbeddedStore(sys.argv[1]); migrate(s)\n"
            "t = datetime(2026, 11, 20, tzinfo=timezone.utc)\n"
            "s.insert_arrow('alerts', alert_table([Alert(kind='budget_burn', severity='warning', state='firing', "
            "subject='team=search', window_start=t, window_end=t, dedup_key='budget:search:2026-11:80', "
            "message='80 % of the monthly budget used', created_at=t)]))\ns.close()\n")
    routes = tmp_path / "routes.yaml"
    routes.write_text(f"destinations:\n  - {{name: chat, kind: slack, url: '{receiver.url('/hook')}'}}\n"
                      "routes:\n  - {destination: chat, kinds: [budget_burn], min_severity: warning}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDSTREAM_")}
    env |= {"SPENDSTREAM_DATA_DIR": str(data), "SPENDSTREAM_ALERT_ROUTES": str(routes)}
    try:
        subprocess.run([sys.executable, "-c", seed, str(data)], env=env, check=True, timeout=60)
        result = subprocess.run([sys.executable, "-m", "spendstream", "notify", "--once"], env=env,
                                capture_output=True, text=True, timeout=60)
    finally:
        receiver.close()
    assert result.returncode == 0, result.stderr
    assert "delivered 1 alert(s)" in result.stdout
    assert "budget burn firing: team=search" in receiver.bodies()[0]["text"]
