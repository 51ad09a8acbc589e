"""OpenTelemetry GenAI spans, encoded by the OpenTelemetry SDK's own OTLP encoder, through the OTLP stage."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from decimal import Decimal

import orjson
import pytest

from spendstream.agents.spans import process_spans
from spendstream.batches import WHOLE_RECORD, SourceRecord
from spendstream.ingest.genai import Attribution
from spendstream.ingest.otlp import decode_traces, spans
from spendstream.pricing import Pricer
from tests.otlp_payloads import SpanSpec, event_id, finished_spans, otlp_json, otlp_proto
from tests.reference import genai_total

START = (time.time_ns() // 1_000_000_000 - 3600) * 1_000_000_000  # an hour ago, on a whole second
RESOURCE = {"service.name": "checkout", "deployment.environment.name": "prod", "spendstream.team": "payments"}

SEMCONV_CHAT = SpanSpec("chat gpt-4o-mini", {
    "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18", "gen_ai.usage.input_tokens": 1200,
    "gen_ai.usage.cache_read.input_tokens": 200, "gen_ai.usage.output_tokens": 300,
    "gen_ai.usage.reasoning.output_tokens": 100, "gen_ai.request.max_tokens": 512,
    "gen_ai.response.time_to_first_chunk": 0.125, "openai.response.service_tier": "default",
    "spendstream.feature": "summarise", "spendstream.tag.route": "/v1/summary"}, START, duration_ns=1_500_000_000)
# OpenLLMetry (traceloop): the older gen_ai.system and prompt/completion token names, its cache names,
# and association properties for attribution.
OPENLLMETRY_CHAT = SpanSpec("anthropic.chat", {
    "llm.request.type": "chat", "gen_ai.system": "anthropic", "gen_ai.request.model": "claude-3-5-haiku-latest",
    "gen_ai.usage.prompt_tokens": 900, "gen_ai.usage.completion_tokens": 40,
    "gen_ai.usage.cache_read_input_tokens": 500, "gen_ai.usage.cache_creation_input_tokens": 100,
    "traceloop.association.properties.customer": "acme"}, START + 1_000_000_000)
# OpenLIT: gen_ai.system with OpenLIT's reasoning name, its environment and application attributes.
OPENLIT_CHAT = SpanSpec("chat o3-mini", {
    "gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "o3-mini",
    "gen_ai.usage.input_tokens": 50, "gen_ai.usage.output_tokens": 400, "gen_ai.usage.reasoning_tokens": 320,
    "gen_ai.environment": "staging", "gen_ai.application_name": "tutor"}, START + 2_000_000_000)
RATE_LIMITED = SpanSpec("chat gpt-4o", {
    "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
    "error.type": "429"}, START + 3_000_000_000, error=True)
# An agent span carrying its children's usage (must not be billed again), and plain HTTP work.
AGENT = SpanSpec("invoke_agent planner", {
    "gen_ai.operation.name": "invoke_agent", "gen_ai.provider.name": "openai", "gen_ai.usage.input_tokens": 1200,
    "gen_ai.usage.output_tokens": 300}, START, duration_ns=3_000_000_000, children=[SEMCONV_CHAT])
HTTP = SpanSpec("GET /health", {"http.request.method": "GET", "http.response.status_code": 200}, START)


@pytest.mark.parametrize("encode", [otlp_proto, otlp_json], ids=["otlp_proto", "otlp_json"])
def test_model_call_spans_become_priced_events_and_other_spans_are_counted(encode) -> None:
    recorded = finished_spans([AGENT, OPENLLMETRY_CHAT, OPENLIT_CHAT, RATE_LIMITED, HTTP], resource=RESOURCE)
    by_name = {span.name: span for span in recorded}
    batch = process_spans([SourceRecord("otlp", 0, 7, encode(recorded))], Pricer())

    assert batch.dead_letters == []
    assert batch.skipped == {"not_a_model_call": 1, "not_genai": 1}
    events = {e.event_id: e for e in (batch.event(i) for i in range(batch.num_events))}
    assert set(events) == {event_id(by_name[name]) for name in
                           ("chat gpt-4o-mini", "anthropic.chat", "chat o3-mini", "chat gpt-4o")}

    chat = events[event_id(by_name["chat gpt-4o-mini"])]
    assert (chat.provider, chat.model) == ("openai", "gpt-4o-mini-2024-07-18")  # the model that answered
    assert (chat.input_tokens, chat.cached_input_tokens, chat.output_tokens, chat.reasoning_tokens) == \
        (1200, 200, 300, 100)
    assert chat.ts == datetime.fromtimestamp(START / 1e9, timezone.utc)
    assert (chat.latency_ms, chat.ttft_ms, chat.max_tokens, chat.service_tier) == (1500.0, 125.0, 512, "default")
    assert (chat.status, chat.http_status) == ("ok", None)
    assert (chat.service, chat.environment, chat.team, chat.feature) == ("checkout", "prod", "payments", "summarise")
    assert chat.tags == {"route": "/v1/summary"}

    claude = events[event_id(by_name["anthropic.chat"])]
    assert (claude.provider, claude.input_tokens, claude.cached_input_tokens, claude.cache_write_tokens,
            claude.output_tokens, claude.customer) == ("anthropic", 900, 500, 100, 40, "acme")

    reasoning = events[event_id(by_name["chat o3-mini"])]
    assert (reasoning.output_tokens, reasoning.reasoning_tokens) == (400, 320)
    # span attributes come before resource attributes, and the first key of the list that is there wins
    assert (reasoning.environment, reasoning.service) == ("prod", "checkout")

    failed = events[event_id(by_name["chat gpt-4o"])]
    assert (failed.status, failed.http_status, failed.input_tokens) == ("rate_limited", 429, 0)

    for i in range(batch.num_events):
        record = batch.cost_record(i)
        assert record.priced, record.unpriced_reason
        assert record.total_cost == genai_total(record.event)


def test_the_same_spans_exported_again_or_in_the_other_encoding_give_the_same_events() -> None:
    recorded = finished_spans([SEMCONV_CHAT, OPENLLMETRY_CHAT], resource=RESOURCE)
    first = process_spans([SourceRecord("otlp", 0, 1, otlp_proto(recorded))], Pricer())
    again = process_spans([SourceRecord("otlp", 0, 2, otlp_json(recorded))], Pricer())
    assert [first.event(i) for i in range(2)] == [again.event(i) for i in range(2)]


def test_a_malformed_payload_or_span_costs_only_itself() -> None:
    good = finished_spans([SEMCONV_CHAT], resource=RESOURCE)
    no_model = SpanSpec("chat", {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai"}, START)
    text_count = SpanSpec("chat", {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                                   "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": "12"}, START)
    bad_spans = finished_spans([no_model, text_count, SEMCONV_CHAT], resource=RESOURCE)
    json_bad_id = orjson.loads(otlp_json(good))
    json_bad_id["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] = "not-hex"
    records = [SourceRecord("otlp", 0, n, value) for n, value in enumerate([
        b"\x0a\x05garbage-that-is-not-otlp", b"{not json", orjson.dumps(json_bad_id), b"", otlp_proto(good),
        otlp_proto(bad_spans)])]

    batch = process_spans(records, Pricer())

    reasons = {(d.source.offset, d.item_index): d.reason for d in batch.dead_letters}
    assert "not an OTLP protobuf traces payload" in reasons[(0, WHOLE_RECORD)]
    assert "not valid JSON" in reasons[(1, WHOLE_RECORD)]
    assert "traceId 'not-hex' is not hex" in reasons[(2, WHOLE_RECORD)]
    assert "empty record value" in reasons[(3, WHOLE_RECORD)]
    assert "names no model" in reasons[(5, 0)]
    assert "input_tokens" in reasons[(5, 1)] and "integer" in reasons[(5, 1)]
    assert len(reasons) == 6
    # Both good spans are stored: the one alone in its record and the one beside the bad spans.
    assert batch.num_events == 2
    # A bad span's raw bytes are an OTLP payload of that span alone, so a replay retries it alone.
    text_dead = next(d for d in batch.dead_letters if (d.source.offset, d.item_index) == (5, 1))
    alone = list(spans(decode_traces(text_dead.raw)))
    assert [s.attributes["gen_ai.usage.input_tokens"] for s in alone] == ["12"]
    assert alone[0].resource["service.name"] == "checkout"


def test_attribution_keys_are_configurable_and_unknown_fields_refused() -> None:
    recorded = finished_spans([SEMCONV_CHAT], resource={**RESOURCE, "k8s.namespace.name": "search-ns"})
    batch = process_spans([SourceRecord("otlp", 0, 0, otlp_proto(recorded))], Pricer(),
                          attribution=Attribution({"team": ["k8s.namespace.name"], "service": ["nowhere"]}))
    event = batch.event(0)
    assert (event.team, event.service, event.environment) == ("search-ns", None, "prod")
    with pytest.raises(ValueError, match="unknown field"):
        Attribution({"teams": ["x"]})


def test_the_attribution_setting_is_json_in_the_environment(monkeypatch) -> None:
    from pydantic import ValidationError

    from spendstream.settings import Settings

    monkeypatch.setenv("SPENDSTREAM_OTLP_ATTRIBUTION", '{"team": ["k8s.namespace.name", "team"]}')
    assert Settings().otlp_attribution == {"team": ["k8s.namespace.name", "team"]}
    monkeypatch.setenv("SPENDSTREAM_OTLP_ATTRIBUTION", '{"squad": ["x"]}')
    with pytest.raises(ValidationError, match="otlp_attribution"):
        Settings()


def test_totals_that_leave_out_their_parts_are_made_to_include_them() -> None:
    # Anthropic's own usage counts cache reads and writes beside input_tokens; an instrumentation that
    # copies it gives parts above the total, which the total therefore did not include.
    native = SpanSpec("chat", {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
                               "gen_ai.request.model": "claude-3-5-haiku-latest", "gen_ai.usage.input_tokens": 10,
                               "gen_ai.usage.cache_read.input_tokens": 500,
                               "gen_ai.usage.cache_creation.input_tokens": 100,
                               "gen_ai.usage.output_tokens": 5, "gen_ai.usage.reasoning.output_tokens": 20}, START)
    batch = process_spans([SourceRecord("otlp", 0, 0, otlp_proto(finished_spans([native], resource=RESOURCE)))],
                          Pricer())
    event = batch.event(0)
    assert (event.input_tokens, event.cached_input_tokens, event.cache_write_tokens) == (610, 500, 100)
    assert (event.output_tokens, event.reasoning_tokens) == (25, 20)


def test_replay_of_a_span_dead_letter_goes_through_the_otlp_stage_again() -> None:
    from spendstream.replay import Replay, predict
    from spendstream.settings import Settings

    refused = SpanSpec("chat", {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai"}, START)
    dead = process_spans([SourceRecord("otel.traces", 0, 0, otlp_proto(finished_spans([refused, SEMCONV_CHAT],
                                                                                       resource=RESOURCE)))],
                         Pricer()).dead_letters
    good = otlp_proto(finished_spans([SEMCONV_CHAT], resource=RESOURCE))
    replays = [Replay("otel.traces", 0, 0, 0, 1, dead[0].reason, dead[0].raw),
               Replay("otel.traces", 0, 1, -1, 2, "was refused", good)]
    predict(replays, Settings(otlp_topic="otel.traces"), Pricer())
    assert replays[0].expected.startswith("refused again:") and "names no model" in replays[0].expected
    assert replays[1].expected == "stores 1 event"


@pytest.mark.integration
def test_a_worker_consumes_the_otlp_topic_and_stores_each_span_once(broker, topic, tmp_path) -> None:
    import json
    import urllib.request

    from spendstream.agents.app import HEALTH_PATH
    from spendstream.demo.worker_process import WorkerProcess
    from spendstream.kafka_admin import ensure_topics
    from spendstream.sinks.store import query_result
    from tests.conftest import produce_raw, wait_for_count, worker_settings

    otlp_topic = f"{topic}.otlp"
    settings = worker_settings(tmp_path / "data", topic)
    ensure_topics(broker, {topic: 2, otlp_topic: 2})
    worker = WorkerProcess(settings, bootstrap_servers=broker, log_path=tmp_path / "worker.log",
                           extra_env={"SPENDSTREAM_OTLP_TOPIC": otlp_topic})
    worker.start()
    try:
        recorded = finished_spans([AGENT, OPENLLMETRY_CHAT, OPENLIT_CHAT, RATE_LIMITED, HTTP], resource=RESOURCE)
        # The same spans exported twice, once in each encoding, and a record that is not OTLP at all.
        produce_raw(broker, otlp_topic, [otlp_proto(recorded), b"\x0a\x03bad", otlp_json(recorded)])
        querier = worker.query_client()
        health_url = worker.query_client().url + HEALTH_PATH

        def skipped() -> dict[str, int]:
            with urllib.request.urlopen(health_url, timeout=10) as response:
                return json.load(response)["otlp_spans_skipped"]

        deadline = time.monotonic() + 60
        while skipped() != {"not_a_model_call": 2, "not_genai": 2} and time.monotonic() < deadline:
            time.sleep(0.3)
        assert skipped() == {"not_a_model_call": 2, "not_genai": 2}  # both payloads written
        assert wait_for_count(querier, "SELECT count() FROM dead_letters FINAL", 1) == 1
        rows = query_result(querier, "SELECT event_id, service, environment, status, toString(total_cost) "
                                     "FROM usage_events FINAL ORDER BY event_id").rows
        conflicts = query_result(querier, "SELECT count() FROM event_conflicts").scalar()
    finally:
        assert worker.stop() == 0, (tmp_path / "worker.log").read_text()[-3000:]

    expected = process_spans([SourceRecord(otlp_topic, 0, 0, otlp_proto(recorded))], Pricer())
    events = sorted((expected.cost_record(i) for i in range(expected.num_events)), key=lambda r: r.event.event_id)
    assert [(*row[:4], Decimal(row[4])) for row in rows] == [
        (r.event.event_id, r.event.service, r.event.environment, r.event.status, r.total_cost) for r in events]
    assert len(rows) == 4 and conflicts == 0  # the second export is the same events, not a conflicting copy
