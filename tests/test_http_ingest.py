"""``spendstream ingest``: a real HTTP client against the real server process, producing to a real broker (tansu)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pytest

from spendstream.localbroker import LocalBroker
from tests.conftest import consume_all, events_in, wait_for_count

pytestmark = pytest.mark.integration

TOKEN = "t0ken-for-tests-only-0123456789abcdef"
NOW = datetime.now(timezone.utc).isoformat()


def event(n: int, **fields: object) -> dict[str, object]:
    return {"event_id": f"http-{n}", "ts": NOW, "provider": "openai", "model": "gpt-4o-mini",
            "input_tokens": 100 + n, "output_tokens": 10, "team": "web", **fields}


@contextmanager
def ingest(bootstrap: str, topic: str, *args: str, **env: str) -> Iterator[str]:
    """``spendstream ingest`` in a child process on a free port; yields its base URL, stops it after."""
    environment = {**os.environ, "SPENDSTREAM_KAFKA_BOOTSTRAP": bootstrap, "SPENDSTREAM_USAGE_TOPIC": topic,
                   "SPENDSTREAM_INGEST_PORT": "0", **env}
    process = subprocess.Popen([sys.executable, "-m", "spendstream", "ingest", *args], env=environment,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert "POST http://" in line, process.stderr.read()
        yield line.split("POST ", 1)[1].split("/v1/usage", 1)[0]
    finally:
        process.terminate()
        assert process.wait(timeout=20) == 0, process.stderr.read()[-3000:]


def post(url: str, body: bytes | object, *, token: str | None = TOKEN, content_type: str = "application/json",
         headers: dict[str, str] | None = None) -> tuple[int, dict, dict[str, str]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {"Content-Type": content_type, **({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
    request = urllib.request.Request(url + "/v1/usage", data=data, method="POST", headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc), dict(exc.headers)


def test_valid_events_go_to_kafka_and_a_worker_stores_them_invalid_ones_get_their_reason(broker, topic,
                                                                                        worker) -> None:
    batch = [event(1), event(2, input_tokens="ten"), event(3), {"ts": NOW, "provider": "openai", "model": "x"},
             event(4, cached_input_tokens=500)]
    with ingest(broker, topic, SPENDSTREAM_INGEST_TOKEN=TOKEN) as url:
        status, answer, _ = post(url, batch)
        single_status, single, _ = post(url, event(5))

    assert status == 202
    assert (answer["accepted"], answer["rejected"]) == (2, 3)
    reasons = {error["index"]: error["reason"] for error in answer["errors"]}
    assert set(reasons) == {1, 3, 4}
    assert "input_tokens" in reasons[1] and "integer" in reasons[1]
    assert "missing required field(s) event_id" in reasons[3]
    assert "cached_input_tokens" in reasons[4]
    assert (single_status, single) == (202, {"accepted": 1, "rejected": 0, "errors": []})

    # Acknowledged by the broker before the answer: the records are there to read.
    sent = [e["event_id"] for value in consume_all(broker, topic, expect=2) for e in events_in(value)]
    assert sorted(sent) == ["http-1", "http-3", "http-5"]
    querier = worker.query_client()
    assert wait_for_count(querier, "SELECT count() FROM usage_events FINAL WHERE startsWith(event_id, 'http-')",
                          3) == 3


def test_requests_without_the_token_the_type_or_within_the_limit_are_refused_with_a_reason(broker, topic) -> None:
    with ingest(broker, topic, SPENDSTREAM_INGEST_TOKEN=TOKEN, SPENDSTREAM_INGEST_MAX_BODY_BYTES="2048") as url:
        no_token = post(url, [event(1)], token=None)
        wrong_token = post(url, [event(1)], token="x" * 40)
        form = post(url, b"event_id=1", content_type="application/x-www-form-urlencoded")
        too_big = post(url, [event(n) for n in range(40)])
        not_json = post(url, b"{not json")
        empty = post(url, [])
        none_valid = post(url, [event(1, model=""), 7])
        with urllib.request.urlopen(url + "/healthz", timeout=10) as response:
            health = json.load(response)

    assert [r[0] for r in (no_token, wrong_token, form, too_big, not_json, empty)] == [401, 401, 415, 413, 400, 400]
    assert "Bearer" in no_token[1]["error"] and TOKEN not in json.dumps(wrong_token[1])
    assert "application/json" in form[1]["error"]
    assert "2048 bytes" in too_big[1]["error"]
    assert "not valid JSON" in not_json[1]["error"]
    assert "no events" in empty[1]["error"]
    assert none_valid[0] == 400 and none_valid[1]["accepted"] == 0
    assert [e["index"] for e in none_valid[1]["errors"]] == [0, 1]
    assert "item 1 is JSON int" in none_valid[1]["errors"][1]["reason"]
    assert health["counts"]["http_401"] == 2 and health["counts"]["http_413"] == 1
    assert consume_all(broker, topic, expect=1, timeout_s=3) == []  # nothing of these reached Kafka


def test_503_with_retry_after_while_the_broker_is_down(topic) -> None:
    local = LocalBroker()
    local.start()
    try:
        with ingest(local.bootstrap_servers, topic, SPENDSTREAM_INGEST_TOKEN=TOKEN,
                    SPENDSTREAM_INGEST_PRODUCE_TIMEOUT_S="3") as url:
            assert post(url, [event(1)])[0] == 202
            with urllib.request.urlopen(url + "/readyz", timeout=10) as response:
                assert json.load(response)["kafka_reachable"] is True
            local.stop()
            status, answer, headers = post(url, [event(2)])
            with pytest.raises(urllib.error.HTTPError) as ready:
                urllib.request.urlopen(url + "/readyz", timeout=10)
    finally:
        local.stop()
    assert status == 503 and headers["Retry-After"] == "5"
    assert "did not acknowledge" in answer["error"] and "send it again" in answer["error"]
    assert ready.value.code == 503 and json.load(ready.value)["kafka_reachable"] is False


def run_ingest(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SPENDSTREAM_INGEST")}
    environment.update(SPENDSTREAM_KAFKA_BOOTSTRAP="127.0.0.1:9", SPENDSTREAM_INGEST_PORT="0", **env)
    return subprocess.run([sys.executable, "-m", "spendstream", "ingest", *args], env=environment,
                          capture_output=True, text=True, timeout=60)


def test_it_refuses_to_start_without_a_usable_token_unless_told_to_on_loopback(tmp_path: Path) -> None:
    no_token = run_ingest()
    assert no_token.returncode == 2 and "SPENDSTREAM_INGEST_TOKEN" in no_token.stderr
    exposed = run_ingest("--insecure-no-auth", "--host", "0.0.0.0")
    assert exposed.returncode == 2 and "127.0.0.1 or ::1 only" in exposed.stderr
    short = run_ingest(SPENDSTREAM_INGEST_TOKEN="short")
    assert short.returncode == 2 and "32 characters" in short.stderr and "short" not in short.stderr.split(":", 1)[1]
    readable = tmp_path / "token"
    readable.write_text(TOKEN)
    readable.chmod(0o644)
    shared = run_ingest(SPENDSTREAM_INGEST_TOKEN_FILE=str(readable))
    assert shared.returncode == 2 and "mode 0600" in shared.stderr and TOKEN not in shared.stderr


def test_a_token_file_works_and_without_auth_on_loopback_web_pages_are_refused(broker, topic, tmp_path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    with ingest(broker, topic, SPENDSTREAM_INGEST_TOKEN_FILE=str(token_file)) as url:
        assert post(url, [event(1)])[0] == 202
        assert post(url, [event(1)], token="y" * 40)[0] == 401
    with ingest(broker, topic, "--insecure-no-auth") as url:
        assert post(url, [event(2)], token=None)[0] == 202
        from_page = post(url, [event(3)], token=None, headers={"Origin": "https://example.com"})
        rebound = post(url, [event(3)], token=None, headers={"Host": "attacker.example:80"})
    assert from_page[0] == 403 and rebound[0] == 403
    sent = [e["event_id"] for value in consume_all(broker, topic, expect=2) for e in events_in(value)]
    assert sorted(sent) == ["http-1", "http-2"]
