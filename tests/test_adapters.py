"""Provider usage objects normalised into the contract's token meanings.

The inputs are the usage objects as each provider documents them.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from types import SimpleNamespace

import pytest

from spendstream.emitter import (
    from_anthropic_message,
    from_anthropic_usage,
    from_bedrock_converse_response,
    from_bedrock_converse_usage,
    from_gemini_response,
    from_gemini_usage,
    from_openai_response,
    from_openai_usage,
    from_otel_genai_attributes,
)
from spendstream.pricing import Pricer

TS = datetime(2025, 8, 1, tzinfo=timezone.utc)


def test_openai_chat_completions_usage() -> None:
    usage = {
        "prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 128, "audio_tokens": 0},
    }
    event = from_openai_usage(usage, model="gpt-4o-2024-08-06", team="search")
    # OpenAI already counts cached inside prompt and reasoning inside completion.
    assert (event.input_tokens, event.cached_input_tokens) == (2006, 1920)
    assert (event.output_tokens, event.reasoning_tokens) == (300, 128)
    assert event.provider == "openai" and event.team == "search"


def test_openai_responses_api_usage_as_sdk_object() -> None:
    usage = SimpleNamespace(
        input_tokens=328, output_tokens=52, total_tokens=380,
        input_tokens_details=SimpleNamespace(cached_tokens=256),
        output_tokens_details=SimpleNamespace(reasoning_tokens=0),
    )
    event = from_openai_usage(usage, model="gpt-4.1")
    assert (event.input_tokens, event.cached_input_tokens, event.output_tokens) == (328, 256, 52)


def test_openai_usage_without_details() -> None:
    event = from_openai_usage({"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": None},
                              model="gpt-4o-mini")
    assert (event.input_tokens, event.cached_input_tokens, event.reasoning_tokens) == (10, 0, 0)


def test_anthropic_usage_cache_tokens_are_beside_input_tokens() -> None:
    usage = {
        "input_tokens": 50, "output_tokens": 503,
        "cache_creation_input_tokens": 2048, "cache_read_input_tokens": 10000,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 2048},
    }
    event = from_anthropic_usage(usage, model="claude-sonnet-4-5")
    assert event.input_tokens == 50 + 2048 + 10000
    assert (event.cached_input_tokens, event.cache_write_tokens) == (10000, 2048)
    assert event.output_tokens == 503
    assert event.cache_write_1h_tokens == 2048


def test_anthropic_usage_without_cache_fields() -> None:
    event = from_anthropic_usage({"input_tokens": 12, "output_tokens": 6}, model="claude-3-5-haiku-latest")
    assert (event.input_tokens, event.cached_input_tokens, event.cache_write_tokens) == (12, 0, 0)
    assert event.tags == {}


def test_gemini_thoughts_are_beside_candidates_and_cached_inside_prompt() -> None:
    # REST usageMetadata of a gemini-2.5-flash call with implicit caching and thinking
    usage = {"promptTokenCount": 12_000, "cachedContentTokenCount": 8_000, "candidatesTokenCount": 300,
             "thoughtsTokenCount": 1_200, "totalTokenCount": 13_500}
    event = from_gemini_usage(usage, model="gemini-2.5-flash", ts=TS)
    assert (event.input_tokens, event.cached_input_tokens) == (12_000, 8_000)
    assert (event.output_tokens, event.reasoning_tokens) == (1_500, 1_200)
    assert event.input_tokens + event.output_tokens == usage["totalTokenCount"]
    # $0.30 in, $0.03 cached, $2.50 out (thinking included) per million
    record = Pricer().price(event)
    assert record.total_cost == (Decimal(4_000) * Decimal("0.30") + Decimal(8_000) * Decimal("0.03")
                                 + Decimal(1_500) * Decimal("2.50")) / 1_000_000


def test_gemini_python_sdk_snake_case_and_tool_use_prompt() -> None:
    usage = SimpleNamespace(prompt_token_count=100, cached_content_token_count=None, candidates_token_count=20,
                            thoughts_token_count=None, tool_use_prompt_token_count=30)
    event = from_gemini_usage(usage, model="gemini-2.0-flash")
    assert (event.input_tokens, event.cached_input_tokens, event.output_tokens, event.reasoning_tokens) == (
        130, 0, 20, 0)


def test_bedrock_converse_cache_tokens_are_beside_input_tokens() -> None:
    usage = {"inputTokens": 500, "outputTokens": 200, "totalTokens": 4_700,
             "cacheReadInputTokens": 3_000, "cacheWriteInputTokens": 1_000}
    event = from_bedrock_converse_usage(usage, model="us.anthropic.claude-3-5-sonnet-20240620-v1:0", ts=TS)
    assert (event.input_tokens, event.cached_input_tokens, event.cache_write_tokens) == (4_500, 3_000, 1_000)
    assert event.input_tokens + event.output_tokens == usage["totalTokens"]
    record = Pricer().price(event)  # $3 in, $0.30 cache read, $3.75 cache write, $15 out per million
    assert record.total_cost == (500 * Decimal(3) + 3_000 * Decimal("0.3") + 1_000 * Decimal("3.75")
                                 + 200 * Decimal(15)) / 1_000_000


def test_otel_genai_attributes() -> None:
    attributes = {"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
                  "gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.usage.input_tokens": 1_000,
                  "gen_ai.usage.cache_read.input_tokens": 600, "gen_ai.usage.output_tokens": 80}
    event = from_otel_genai_attributes(attributes, team="search")
    assert (event.provider, event.model, event.team) == ("openai", "gpt-4o-2024-08-06", "search")
    assert (event.input_tokens, event.cached_input_tokens, event.output_tokens) == (1_000, 600, 80)


def test_otel_older_attribute_names_and_missing_model() -> None:
    event = from_otel_genai_attributes({"gen_ai.system": "anthropic", "gen_ai.request.model": "claude-3-haiku",
                                        "gen_ai.usage.prompt_tokens": 7, "gen_ai.usage.completion_tokens": 3})
    assert (event.provider, event.input_tokens, event.output_tokens) == ("anthropic", 7, 3)
    with pytest.raises(ValueError, match="gen_ai.request.model"):
        from_otel_genai_attributes({"gen_ai.system": "openai", "gen_ai.usage.input_tokens": 1})


# -- whole responses: the tier served, cache writes, server-side tool calls, region ----------------
# Built as the real SDK objects (openai, anthropic) from the documented JSON, and as plain dicts.

CHAT_COMPLETION = {  # https://platform.openai.com/docs/api-reference/chat/object
    "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG", "object": "chat.completion", "created": 1741570283,
    "model": "gpt-4o-2024-08-06", "service_tier": "flex", "system_fingerprint": "fp_fc9f1d7035",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "…", "refusal": None},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1117, "completion_tokens": 46, "total_tokens": 1163,
              "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0, "cache_write_tokens": 64},
              "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
}

RESPONSE = {  # https://platform.openai.com/docs/api-reference/responses/object
    "id": "resp_67ccd3a9da748190baa7f1570fe91ac6", "object": "response", "created_at": 1741476777,
    "status": "completed", "model": "gpt-4.1-2025-04-14", "service_tier": "priority", "parallel_tool_calls": True,
    "tool_choice": "auto", "tools": [], "output": [
        {"type": "web_search_call", "id": "ws_1", "status": "completed",
         "action": {"type": "search", "query": "q"}},
        {"type": "web_search_call", "id": "ws_2", "status": "completed",
         "action": {"type": "search", "query": "q2"}},
        {"type": "file_search_call", "id": "fs_1", "status": "completed", "queries": ["q"], "results": None},
        {"type": "code_interpreter_call", "id": "ci_1", "status": "completed", "code": "1+1",
         "container_id": "cntr_1", "outputs": None},
        {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "…", "annotations": []}]}],
    "usage": {"input_tokens": 328, "output_tokens": 52, "total_tokens": 380,
              "input_tokens_details": {"cached_tokens": 256, "cache_write_tokens": 0},
              "output_tokens_details": {"reasoning_tokens": 0}},
}

MESSAGE = {  # https://docs.anthropic.com/en/api/messages (response), web search and code execution tool docs
    "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF", "type": "message", "role": "assistant",
    "model": "claude-sonnet-4-5-20250929", "stop_reason": "end_turn", "stop_sequence": None,
    "content": [
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}},
        {"type": "server_tool_use", "id": "srvtoolu_2", "name": "bash_code_execution", "input": {"command": "ls"}},
        {"type": "text", "text": "…"}],
    "usage": {"input_tokens": 2048, "output_tokens": 503, "cache_creation_input_tokens": 3000,
              "cache_read_input_tokens": 10000, "service_tier": "batch", "inference_geo": "us",
              "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
              "server_tool_use": {"web_search_requests": 3, "web_fetch_requests": 1}},
}


@pytest.mark.parametrize("as_sdk_object", [False, True], ids=["dict", "sdk"])
def test_openai_chat_completion_reports_the_tier_served_and_cache_writes(as_sdk_object: bool) -> None:
    from openai.types.chat import ChatCompletion

    response = ChatCompletion.model_validate(CHAT_COMPLETION) if as_sdk_object else CHAT_COMPLETION
    event = from_openai_response(response, team="search")
    assert (event.model, event.service_tier, event.team, event.provider) == (
        "gpt-4o-2024-08-06", "flex", "search", "openai")
    assert (event.input_tokens, event.cached_input_tokens, event.cache_write_tokens) == (1117, 1024, 64)
    assert (event.web_search_calls, event.schema_version) == (0, 2)


@pytest.mark.parametrize("as_sdk_object", [False, True], ids=["dict", "sdk"])
def test_openai_responses_api_counts_server_side_tool_calls(as_sdk_object: bool) -> None:
    from openai.types.responses import Response

    response = Response.model_validate(RESPONSE) if as_sdk_object else RESPONSE
    event = from_openai_response(response, provider="azure", customer="acme")
    assert (event.provider, event.customer, event.model, event.service_tier) == (
        "azure", "acme", "gpt-4.1-2025-04-14", "priority")
    assert (event.web_search_calls, event.file_search_calls, event.code_execution_calls) == (2, 1, 1)
    assert (event.input_tokens, event.cached_input_tokens, event.output_tokens) == (328, 256, 52)


def test_openai_response_without_usage_says_so_and_the_caller_wins() -> None:
    with pytest.raises(ValueError, match="no usage"):
        from_openai_response({"model": "gpt-4o", "choices": []})
    event = from_openai_response(CHAT_COMPLETION, service_tier="default", model="gpt-4o")
    assert (event.service_tier, event.model) == ("default", "gpt-4o")


@pytest.mark.parametrize("as_sdk_object", [False, True], ids=["dict", "sdk"])
def test_anthropic_message_reports_batch_tool_calls_cache_ttls_and_geo(as_sdk_object: bool) -> None:
    from anthropic.types import Message

    message = Message.model_validate(MESSAGE) if as_sdk_object else MESSAGE
    event = from_anthropic_message(message, feature="research")
    assert (event.mode, event.service_tier, event.region, event.feature) == ("batch", None, "us", "research")
    assert (event.web_search_calls, event.web_fetch_calls, event.code_execution_calls) == (3, 1, 1)
    assert event.input_tokens == 2048 + 3000 + 10000
    assert (event.cached_input_tokens, event.cache_write_tokens, event.cache_write_1h_tokens) == (10000, 3000, 2000)


def test_anthropic_priority_and_fast_are_kept_as_the_tier() -> None:
    priority = from_anthropic_message(MESSAGE | {"usage": MESSAGE["usage"] | {"service_tier": "priority"}})
    assert (priority.mode, priority.service_tier) == ("realtime", "priority")
    fast = from_anthropic_message(MESSAGE | {"usage": MESSAGE["usage"] | {"service_tier": "standard",
                                                                           "speed": "fast"}})
    assert fast.service_tier == "fast"


def test_gemini_response_counts_grounding_queries_and_provisioned_throughput() -> None:
    # https://ai.google.dev/api/generate-content#v1beta.GenerateContentResponse (REST JSON)
    response = {"modelVersion": "gemini-2.5-flash",
                "candidates": [{"groundingMetadata": {"webSearchQueries": ["a", "b"]}}],
                "usageMetadata": {"promptTokenCount": 1000, "cachedContentTokenCount": 200,
                                  "candidatesTokenCount": 50, "thoughtsTokenCount": 30,
                                  "toolUsePromptTokenCount": 400, "trafficType": "ON_DEMAND"}}
    event = from_gemini_response(response, team="t")
    assert (event.model, event.web_search_calls, event.service_tier) == ("gemini-2.5-flash", 2, None)
    assert (event.input_tokens, event.cached_input_tokens, event.output_tokens, event.reasoning_tokens) == (
        1400, 200, 80, 30)
    provisioned = from_gemini_response(response | {"usageMetadata": response["usageMetadata"]
                                                    | {"trafficType": "PROVISIONED_THROUGHPUT"}})
    assert provisioned.service_tier == "provisioned_throughput"
    assert Pricer().price(provisioned.model_copy(update={"ts": TS})).priced is False


def test_bedrock_converse_response_keeps_region_and_inference_profile() -> None:
    # https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html (response syntax)
    response = {"output": {"message": {"role": "assistant", "content": [{"text": "…"}]}}, "stopReason": "end_turn",
                "usage": {"inputTokens": 500, "outputTokens": 200, "totalTokens": 700},
                "metrics": {"latencyMs": 812}}
    arn = ("arn:aws:bedrock:eu-west-1:123456789012:inference-profile/"
           "eu.anthropic.claude-sonnet-4-5-20250929-v1:0")
    event = from_bedrock_converse_response(response, model=arn, region="us-east-1", team="t")
    assert (event.region, event.inference_profile, event.latency_ms, event.team) == ("eu-west-1", arn, 812.0, "t")
    geo = from_bedrock_converse_response(response, model="global.anthropic.claude-sonnet-4-5-20250929-v1:0",
                                         region="us-west-2")
    assert (geo.region, geo.inference_profile) == ("us-west-2", "global.anthropic.claude-sonnet-4-5-20250929-v1:0")
    plain = from_bedrock_converse_response(response, model="anthropic.claude-3-5-sonnet-20240620-v1:0")
    assert (plain.region, plain.inference_profile, plain.provider) == (None, None, "bedrock")


def test_bedrock_global_and_in_region_profiles_are_priced_as_published() -> None:
    """Claude Sonnet 4.5 on Bedrock: global $3 / $15, in-region and geographic profiles 10 % more.

    https://aws.amazon.com/bedrock/pricing/ (Anthropic: "regional and geo endpoints … 10% premium")
    """
    response = {"usage": {"inputTokens": 1_000_000, "outputTokens": 100_000}}
    prices = {}
    for model in ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
                  "anthropic.claude-sonnet-4-5-20250929-v1:0"):
        event = from_bedrock_converse_response(response, model=model, region="us-east-1", ts=TS.replace(year=2026))
        prices[model.split(".")[0]] = Pricer().price(event).total_cost
    assert prices == {"global": Decimal("4.5"), "us": Decimal("4.95"), "anthropic": Decimal("4.95")}


def test_a_gateway_reported_cost_travels_as_exact_decimal_text() -> None:
    """OpenRouter answers in the OpenAI shape with ``usage.cost`` in USD (its usage accounting); the event
    carries it exactly beside the tokens, and a cost the contract cannot hold is left out, not the event."""
    from spendstream.emitter.adapters import from_openai_response

    response = {"model": "openai/gpt-4o-mini", "usage": {"prompt_tokens": 1200, "completion_tokens": 80,
                                                         "total_tokens": 1280, "cost": 0.000228}}
    event = from_openai_response(response, provider="openrouter")
    assert (event.provider_cost_usd, event.provider_cost_source) == ("0.000228", "usage.cost")
    assert (event.input_tokens, event.output_tokens) == (1200, 80)
    negative = from_openai_response({**response, "usage": {**response["usage"], "cost": -1.0}}, provider="openrouter")
    assert negative.provider_cost_usd is None and negative.input_tokens == 1200
    assert from_openai_response({**response, "usage": {"prompt_tokens": 1, "completion_tokens": 1}},
                                provider="openrouter").provider_cost_usd is None
