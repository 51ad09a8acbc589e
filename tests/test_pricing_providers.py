"""Every provider and model of the pinned catalog reachable, by the names gateways and SDKs use.

The walk goes through the same path an event takes: normalisation, the catalog
lookup and the vectorised pricer. What cannot be priced says exactly what was not
found: the provider, the model, the tier, or the units the catalog prices it by.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest
from genai_prices import data_snapshot

from spendstream.pricing import Pricer, UsageColumns
from spendstream.pricing.catalog import Catalog
from spendstream.pricing.normalize import CATALOG_PROVIDERS, PROVIDER_ALIASES
from spendstream.pricing.rates import REPORTED_PRICE_KEYS
from spendstream.schemas import UsageEvent

TS = datetime(2026, 11, 1, tzinfo=timezone.utc)
SNAPSHOT = data_snapshot.get_snapshot()
CATALOG = Catalog()


def _charged(price) -> set[str]:
    return {key for key, value in vars(price).items() if not key.startswith("_") and value is not None}


def test_every_provider_and_model_of_the_catalog_is_reached_by_its_own_name() -> None:
    assert {p.id for p in SNAPSHOT.providers} == CATALOG_PROVIDERS
    missed = []
    for provider in SNAPSHOT.providers:
        for model in provider.models:
            provider_id, _, found_provider, found_model = CATALOG.find(provider.id, model.id)
            if found_model is not model or found_provider is not provider:
                missed.append((provider.id, model.id, found_provider and found_provider.id,
                               found_model and found_model.id))
    assert missed == []
    assert sum(len(p.models) for p in SNAPSHOT.providers) > 2_000


def test_every_model_of_the_catalog_is_priced_or_says_which_units_it_is_priced_by() -> None:
    """The whole catalog as one batch: a price, $0 only where the catalog charges nothing, or a reason."""
    models = [(p, m) for p in SNAPSHOT.providers for m in p.models]
    events = [UsageEvent(ts=TS, provider=p.id, model=m.id, input_tokens=1_000, output_tokens=100)
              for p, m in models]
    batch = Pricer().price_columns(UsageColumns.from_events(events))
    problems = []
    rows = zip(models, batch.priced.to_pylist(), batch.unpriced_reason.to_pylist(), batch.total_cost.to_pylist(),
               batch.price_model_id.to_pylist(), strict=True)
    for (provider, model), priced, reason, total, model_id in rows:
        charged = _charged(model.get_prices(TS))
        if model_id != model.id:
            problems.append(f"{provider.id}/{model.id}: resolved to {model_id}")
        elif priced and total == 0 and charged:
            problems.append(f"{provider.id}/{model.id}: $0 although the catalog charges {sorted(charged)}")
        elif not priced and (charged & REPORTED_PRICE_KEYS or not all(unit in reason for unit in charged)):
            problems.append(f"{provider.id}/{model.id}: unpriced ({reason}) although it charges {sorted(charged)}")
    assert problems == []
    unpriced = batch.priced.to_pylist().count(False)
    assert 0 < unpriced < 50  # audio hours, document pages, characters: nothing a usage event reports


@pytest.mark.parametrize(("provider", "model", "provider_id", "model_id"), [
    # the issue's example: Together, by its own id and through LiteLLM's prefix
    ("together", "meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8", "together",
     "meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8"),
    ("litellm", "together_ai/meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8", "together",
     "meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8"),
    ("together_ai", "together_ai/meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8", "together",
     "meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8"),
    ("togetherai", "meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8", "together",  # Vercel AI SDK
     "meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8"),
    # OpenRouter's vendor/model, as sent to OpenRouter and through LiteLLM
    ("openrouter", "anthropic/claude-3.5-sonnet", "openrouter", "anthropic/claude-3.5-sonnet"),
    ("openai", "openrouter/anthropic/claude-3.5-sonnet", "openrouter", "anthropic/claude-3.5-sonnet"),
    # Bedrock, Vertex AI, Gemini: LiteLLM prefixes and OpenTelemetry provider names
    ("litellm", "bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0", "aws",
     "regional.anthropic.claude-3-5-sonnet-20240620-v1:0"),
    ("aws.bedrock", "us.anthropic.claude-3-5-sonnet-20240620-v1:0", "aws",
     "regional.anthropic.claude-3-5-sonnet-20240620-v1:0"),
    ("litellm", "vertex_ai/gemini-2.5-pro", "google", "gemini-2.5-pro"),
    ("gcp.vertex_ai", "gemini-2.5-pro", "google", "gemini-2.5-pro"),
    ("gemini", "models/gemini-2.5-flash", "google", "gemini-2.5-flash"),
    # Fireworks' resource names, HuggingFace Inference Providers both ways
    ("fireworks", "accounts/fireworks/models/deepseek-r1-0528", "fireworks", "deepseek-r1-0528"),
    ("litellm", "fireworks_ai/accounts/fireworks/models/deepseek-r1-0528", "fireworks", "deepseek-r1-0528"),
    ("huggingface", "meta-llama/Llama-3.3-70B-Instruct:groq", "huggingface_groq",
     "meta-llama/Llama-3.3-70B-Instruct"),
    ("litellm", "huggingface/together/meta-llama/Llama-3.3-70B-Instruct", "huggingface_together",
     "meta-llama/Llama-3.3-70B-Instruct"),
    # more LiteLLM and OpenTelemetry spellings
    ("xai", "grok-4", "x-ai", "grok-4-0709"),
    ("x_ai", "grok-4", "x-ai", "grok-4-0709"),
    ("mistral_ai", "mistral-large-latest", "mistral", "mistral-large"),
    ("cohere_chat", "command-r-plus", "cohere", "command-r-plus"),
    ("moonshot", "kimi-k2", "moonshotai", "kimi-k2"),
    ("litellm", "deepseek/deepseek-chat", "deepseek", "deepseek-chat"),
    ("litellm", "cerebras/gpt-oss-120b", "cerebras", "gpt-oss-120b"),
    ("perplexity", "sonar", "perplexity", "sonar"),
])
def test_gateway_and_sdk_names_reach_the_catalog_entry(provider: str, model: str, provider_id: str,
                                                       model_id: str) -> None:
    price = CATALOG.resolve(provider, model, TS, "realtime", None)
    assert price.priced, price.reason
    assert (price.provider_id, price.model_id) == (provider_id, model_id)


def test_every_alias_names_a_catalog_provider() -> None:
    assert set(PROVIDER_ALIASES.values()) <= CATALOG_PROVIDERS
    assert {"together_ai", "fireworks_ai", "vertex_ai", "bedrock", "xai", "azure_ai"} <= PROVIDER_ALIASES.keys()


def test_the_issues_example_is_priced_at_togethers_published_price() -> None:
    # https://www.together.ai/pricing: Llama 4 Maverick $0.27 input / $0.85 output per 1M tokens
    record = Pricer().price(UsageEvent(ts=TS, provider="together",
                                       model="meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8",
                                       input_tokens=1_000_000, output_tokens=1_000_000))
    assert record.total_cost == Decimal("1.12")


def test_a_hosts_call_is_never_priced_at_another_hosts_price() -> None:
    """Together does not list deepseek/deepseek-v4-pro; DeepSeek does. The call stays unpriced."""
    assert CATALOG.resolve("deepseek", "deepseek-v4-pro", TS, "realtime", None).priced
    price = CATALOG.resolve("together", "deepseek/deepseek-v4-pro", TS, "realtime", None)
    assert not price.priced
    assert price.reason == ("model 'deepseek/deepseek-v4-pro' is not in the catalog for provider 'together' "
                            "(looked up as together/deepseek/deepseek-v4-pro)")


@pytest.mark.parametrize(("provider", "model", "mode", "tier", "reason"), [
    ("acme-cloud", "gpt-4o", "realtime", None,
     "provider 'acme-cloud' is not in the catalog (neither a provider id of genai-prices nor an alias of one)"),
    ("openai", "gpt-nonexistent-9", "realtime", None,
     "model 'gpt-nonexistent-9' is not in the catalog for provider 'openai' (looked up as openai/gpt-nonexistent-9)"),
    ("openai", "gpt-4o", "realtime", "scale",
     "no service_tier=scale price for 'gpt-4o' on 2026-11-01 in the catalog; add an override"),
    ("openai", "whisper-1", "realtime", None,
     "'whisper-1' of 'openai' is priced per audio_hours, input_audio_hours in the catalog, which a usage event "
     "does not report; add an override"),
])
def test_the_unpriced_reason_says_what_was_not_found(provider: str, model: str, mode: str, tier: str | None,
                                                      reason: str) -> None:
    record = Pricer().price(UsageEvent(ts=TS, provider=provider, model=model, mode=mode, service_tier=tier,
                                       input_tokens=10))
    assert (record.priced, record.total_cost, record.unpriced_reason) == (False, None, reason)
