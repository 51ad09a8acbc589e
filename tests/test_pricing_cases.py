"""Published prices, case by case: exact USD for provider, model, date, token mix, mode and tier.

Each expected total was computed by hand from the provider's published price per
million tokens (in the comment), not by spendstream or genai-prices:

    (input − cached − cache write) × input rate + cached × cached rate
    + (cache write − 1h write) × 5-minute write rate + 1h write × 1-hour write rate
    + output × output rate   (reasoning/thinking tokens are output, at the output rate)

Token keys: i input (all), c cached read, w cache write (all), w1 of which 1-hour,
o output (all), rs of which reasoning. Call keys (fees, priced per call): ws web
searches, wf web fetches, fs file searches, ce code executions; every answered
event is also one request.
"""

from __future__ import annotations

import tempfile
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import NamedTuple

import pytest

from spendstream.pricing import Pricer, load_overrides
from spendstream.schemas import UsageEvent


class Case(NamedTuple):
    id: str
    provider: str
    model: str
    ts: str
    mode: str
    service_tier: str | None
    tokens: dict[str, int]
    expected_usd: str
    customer: str | None = None
    region: str | None = None
    inference_profile: str | None = None
    status: str = "ok"


CASES = [
    Case('openai-gpt4o-plain', 'openai', 'gpt-4o', '2024-09-01T12:00:00Z', 'realtime', None, {'i': 1200, 'o': 350}, '0.0065'),  # $2.50 in / $1.25 cached / $10 out
    Case('openai-gpt4o-dated-snapshot', 'openai', 'gpt-4o-2024-08-06', '2024-09-01T12:00:00Z', 'realtime', None, {'i': 10000, 'c': 4096, 'o': 800}, '0.02788'),  # 2024-08-06 snapshot = gpt-4o price
    Case('openai-gpt4o-2024-05-13', 'openai', 'gpt-4o-2024-05-13', '2024-09-01T12:00:00Z', 'realtime', None, {'i': 10000, 'o': 800}, '0.062'),  # older snapshot: $5 / $15
    Case('openai-gpt4o-mini-cached', 'openai', 'gpt-4o-mini', '2025-01-01T00:00:00Z', 'realtime', None, {'i': 1000000, 'c': 400000, 'o': 100000}, '0.180'),  # $0.15 / $0.075 / $0.60
    Case('openai-gpt4o-mini-case', 'OpenAI', 'GPT-4o-Mini', '2025-01-01T00:00:00Z', 'realtime', None, {'i': 5000, 'o': 5000}, '0.00375'),  # case-insensitive names
    Case('openai-gpt41', 'openai', 'gpt-4.1', '2025-05-01T00:00:00Z', 'realtime', None, {'i': 50000, 'c': 20000, 'o': 2000}, '0.086'),  # $2 / $0.50 / $8
    Case('openai-gpt41-mini', 'openai', 'gpt-4.1-mini', '2025-05-01T00:00:00Z', 'realtime', None, {'i': 50000, 'c': 10000, 'o': 2000}, '0.0202'),  # $0.40 / $0.10 / $1.60
    Case('openai-gpt41-nano', 'openai', 'gpt-4.1-nano', '2025-05-01T00:00:00Z', 'realtime', None, {'i': 123457, 'c': 1024, 'o': 999}, '0.0126685'),  # $0.10 / $0.025 / $0.40
    Case('openai-o3-before-cut', 'openai', 'o3', '2025-05-01T00:00:00Z', 'realtime', None, {'i': 20000, 'o': 30000, 'rs': 25000}, '1.4'),  # o3 before the 2025-06-10 cut: $10 / $40; reasoning billed as output
    Case('openai-o3-after-cut', 'openai', 'o3', '2025-07-01T00:00:00Z', 'realtime', None, {'i': 20000, 'o': 30000, 'rs': 25000}, '0.28'),  # o3 after the cut: $2 / $8
    Case('openai-o4-mini-reasoning', 'openai', 'o4-mini', '2025-05-01T00:00:00Z', 'realtime', None, {'i': 3000, 'c': 1024, 'o': 12000, 'rs': 11000}, '0.0552552'),  # $1.10 / $0.275 / $4.40
    Case('openai-o1', 'openai', 'o1', '2025-01-01T00:00:00Z', 'realtime', None, {'i': 8000, 'c': 2048, 'o': 20000, 'rs': 18000}, '1.30464'),  # $15 / $7.50 / $60
    Case('openai-gpt5', 'openai', 'gpt-5', '2025-09-01T00:00:00Z', 'realtime', None, {'i': 40000, 'c': 30000, 'o': 5000, 'rs': 4000}, '0.06625'),  # $1.25 / $0.125 / $10
    Case('openai-gpt5-mini', 'openai', 'gpt-5-mini', '2025-09-01T00:00:00Z', 'realtime', None, {'i': 40000, 'c': 30000, 'o': 5000, 'rs': 4000}, '0.01325'),  # $0.25 / $0.025 / $2
    Case('openai-gpt5-nano', 'openai', 'gpt-5-nano', '2025-09-01T00:00:00Z', 'realtime', None, {'i': 40000, 'o': 5000}, '0.004'),  # $0.05 / $0.005 / $0.40
    Case('openai-gpt35', 'openai', 'gpt-3.5-turbo', '2025-01-01T00:00:00Z', 'realtime', None, {'i': 1500, 'o': 500}, '0.0015'),  # $0.50 / $1.50
    Case('openai-batch-rule', 'openai', 'gpt-4o-mini', '2025-01-01T00:00:00Z', 'batch', None, {'i': 1000000, 'o': 1000000}, '0.3750'),  # Batch API: 50% off ($0.075 / $0.30)
    Case('openai-batch-catalog', 'openai', 'gpt-4o', '2026-11-01T00:00:00Z', 'batch', None, {'i': 1000000, 'o': 1000000}, '6.25'),  # batch variant in the catalog: $1.25 / $5
    Case('openai-flex-rule', 'openai', 'o3', '2025-08-01T00:00:00Z', 'realtime', 'flex', {'i': 100000, 'c': 50000, 'o': 10000}, '0.1025'),  # flex = batch rates: $1 / $0.25 / $4
    Case('openai-priority', 'openai', 'gpt-4o', '2026-11-01T00:00:00Z', 'realtime', 'priority', {'i': 100000, 'c': 50000, 'o': 10000}, '0.48875'),  # priority tier: $4.25 / $2.125 / $17
    Case('openai-default-tier', 'openai', 'gpt-4o', '2026-11-01T00:00:00Z', 'realtime', 'default', {'i': 100000, 'c': 50000, 'o': 10000}, '0.2875'),  # service_tier=default is the standard price
    Case('azure-gpt4o', 'azure', 'gpt-4o', '2025-01-01T00:00:00Z', 'realtime', None, {'i': 7000, 'c': 1024, 'o': 700}, '0.02322'),  # Azure OpenAI global: as OpenAI
    Case('azure-prefix', 'openai', 'azure/gpt-4o', '2025-01-01T00:00:00Z', 'realtime', None, {'i': 7000, 'o': 700}, '0.0245'),  # gateway prefix azure/
    Case('anthropic-35-sonnet', 'anthropic', 'claude-3-5-sonnet-20241022', '2025-01-01T00:00:00Z', 'realtime', None, {'i': 10000, 'o': 1000}, '0.045'),  # $3 / $15
    Case('anthropic-35-sonnet-cache', 'anthropic', 'claude-3-5-sonnet-latest', '2025-01-01T00:00:00Z', 'realtime', None, {'i': 120000, 'c': 100000, 'w': 15000, 'o': 1000}, '0.11625'),  # cache read $0.30, 5-minute write $3.75
    Case('anthropic-35-sonnet-1h', 'anthropic', 'claude-3-5-sonnet-20241022', '2025-01-01T00:00:00Z', 'realtime', None, {'i': 120000, 'c': 50000, 'w': 60000, 'w1': 40000, 'o': 1000}, '0.375'),  # 1-hour write $6 (2x input)
    Case('anthropic-35-haiku-cache', 'anthropic', 'claude-3-5-haiku-20241022', '2025-01-01T00:00:00Z', 'realtime', None, {'i': 1000000, 'w': 1000000}, '1.00'),  # 5-minute write $1.00
    Case('anthropic-3-opus', 'anthropic', 'claude-3-opus-20240229', '2025-01-01T00:00:00Z', 'realtime', None, {'i': 2000, 'o': 4000}, '0.33'),  # $15 / $75
    Case('anthropic-3-haiku', 'anthropic', 'claude-3-haiku-20240307', '2025-01-01T00:00:00Z', 'realtime', None, {'i': 20000, 'c': 10000, 'w': 5000, 'o': 400}, '0.00355'),  # $0.25 / $0.03 / $0.30 / $1.25
    Case('anthropic-sonnet4', 'anthropic', 'claude-sonnet-4-20250514', '2025-07-01T00:00:00Z', 'realtime', None, {'i': 150000, 'c': 100000, 'o': 8000, 'rs': 6000}, '0.30'),  # under 200k: $3 / $15; thinking billed as output
    Case('anthropic-opus41', 'anthropic', 'claude-opus-4-1', '2025-09-01T00:00:00Z', 'realtime', None, {'i': 30000, 'c': 20000, 'w': 5000, 'w1': 5000, 'o': 2000}, '0.405'),  # $15 / $1.50 / $18.75 / $30 (1h) / $75
    Case('anthropic-haiku45', 'anthropic', 'claude-haiku-4-5', '2025-11-01T00:00:00Z', 'realtime', None, {'i': 30000, 'c': 20000, 'w': 5000, 'o': 2000}, '0.02325'),  # $1 / $0.10 / $1.25 / $5
    Case('anthropic-opus45', 'anthropic', 'claude-opus-4-5', '2025-12-01T00:00:00Z', 'realtime', None, {'i': 30000, 'c': 20000, 'w': 5000, 'o': 2000}, '0.11625'),  # $5 / $0.50 / $6.25 / $25
    Case('anthropic-batch-rule', 'anthropic', 'claude-3-5-haiku-20241022', '2025-01-01T00:00:00Z', 'batch', None, {'i': 1000000, 'c': 200000, 'w': 100000, 'o': 500000}, '1.338'),  # Message Batches: 50% off every rate
    Case('bedrock-model-id', 'bedrock', 'anthropic.claude-3-5-sonnet-20240620-v1:0', '2025-01-01T00:00:00Z', 'realtime', None, {'i': 10000, 'o': 1000}, '0.045'),  # Bedrock on-demand: $3 / $15
    Case('bedrock-region-prefix', 'bedrock', 'us.anthropic.claude-3-5-sonnet-20240620-v1:0', '2025-01-01T00:00:00Z', 'realtime', None, {'i': 10000, 'o': 1000}, '0.045'),  # cross-region inference profile
    Case('bedrock-arn', 'bedrock', 'arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-5-sonnet-20240620-v1:0', '2025-01-01T00:00:00Z', 'realtime', None, {'i': 10000, 'o': 1000}, '0.045'),  # foundation-model ARN
    Case('gemini-25-pro-short', 'google', 'gemini-2.5-pro', '2025-08-01T00:00:00Z', 'realtime', None, {'i': 100000, 'c': 60000, 'o': 5000, 'rs': 3000}, '0.1075'),  # up to 200k: $1.25 / $0.125 / $10 (thinking as output)
    Case('gemini-25-pro-long', 'google', 'gemini-2.5-pro', '2025-08-01T00:00:00Z', 'realtime', None, {'i': 300000, 'c': 100000, 'o': 5000}, '0.60'),  # above 200k: $2.50 / $0.25 / $15 on all tokens
    Case('gemini-25-pro-at-threshold', 'google', 'gemini-2.5-pro', '2025-08-01T00:00:00Z', 'realtime', None, {'i': 200000, 'o': 1000}, '0.260'),  # exactly 200k is still the lower tier
    Case('gemini-25-flash', 'google', 'gemini-2.5-flash', '2025-08-01T00:00:00Z', 'realtime', None, {'i': 80000, 'c': 40000, 'o': 3000, 'rs': 2000}, '0.0207'),  # $0.30 / $0.03 / $2.50
    Case('gemini-models-path', 'google', 'models/gemini-2.5-flash', '2025-08-01T00:00:00Z', 'realtime', None, {'i': 80000, 'o': 3000}, '0.0315'),  # Gemini API's models/ name
    Case('gemini-15-pro-long', 'google', 'gemini-1.5-pro', '2025-01-01T00:00:00Z', 'realtime', None, {'i': 150000, 'o': 2000}, '0.395'),  # above 128k: $2.50 / $10
    Case('gemini-15-flash-short', 'google', 'gemini-1.5-flash', '2025-01-01T00:00:00Z', 'realtime', None, {'i': 100000, 'c': 50000, 'o': 2000}, '0.0052875'),  # up to 128k: $0.075 / $0.01875 / $0.30
    Case('gemini-20-flash', 'google', 'gemini-2.0-flash', '2025-03-01T00:00:00Z', 'realtime', None, {'i': 100000, 'o': 2000}, '0.0108'),  # $0.10 / $0.40
    Case('gemini-batch-rule', 'google', 'gemini-2.5-flash', '2025-08-01T00:00:00Z', 'batch', None, {'i': 1000000, 'o': 1000000}, '1.400'),  # Batch Mode: 50% off
    Case('deepseek-peak', 'deepseek', 'deepseek-chat', '2025-03-01T10:00:00Z', 'realtime', None, {'i': 100000, 'c': 60000, 'o': 4000}, '0.0194'),  # standard hours: $0.27 miss / $0.07 hit / $1.10
    Case('deepseek-off-peak', 'deepseek', 'deepseek-chat', '2025-03-01T17:00:00Z', 'realtime', None, {'i': 100000, 'c': 60000, 'o': 4000}, '0.0097'),  # off-peak 16:30-00:30 UTC: 50% off
    Case('mistral-large', 'mistral', 'mistral-large-latest', '2025-03-01T00:00:00Z', 'realtime', None, {'i': 10000, 'o': 2000}, '0.032'),  # $2 / $6
]

# The tier actually served, tool and request fees, and where the call was served.
CASES += [
    Case('openai-priority-served', 'openai', 'gpt-5', '2026-11-01T00:00:00Z', 'realtime', 'priority', {'i': 100000, 'c': 40000, 'o': 10000, 'rs': 8000}, '0.36'),  # https://platform.openai.com/docs/pricing (Priority): gpt-5 $2.50 / $0.25 / $20
    Case('openai-flex-served', 'openai', 'gpt-5', '2026-11-01T00:00:00Z', 'realtime', 'flex', {'i': 100000, 'c': 40000, 'o': 10000}, '0.0900'),  # https://platform.openai.com/docs/pricing (Flex): gpt-5 $0.625 / $0.0625 / $5
    Case('anthropic-batch-served-with-search', 'anthropic', 'claude-sonnet-4-5', '2025-11-01T00:00:00Z', 'batch', None, {'i': 100000, 'o': 10000, 'ws': 2}, '0.245'),  # https://docs.anthropic.com/en/docs/build-with-claude/batch-processing#pricing: $1.50 / $7.50; web search $10 / 1k, not discounted
    Case('anthropic-web-search', 'anthropic', 'claude-sonnet-4-5', '2025-11-01T00:00:00Z', 'realtime', None, {'i': 10000, 'o': 1000, 'ws': 3, 'wf': 2}, '0.075'),  # https://docs.anthropic.com/en/docs/agents-and-tools/tool-use/web-search-tool: $10 / 1k searches; web fetch: tokens only
    Case('openai-file-search', 'openai', 'gpt-4.1', '2025-06-01T00:00:00Z', 'realtime', None, {'i': 100000, 'o': 10000, 'fs': 4}, '0.29'),  # https://platform.openai.com/docs/pricing#built-in-tools: file search $2.50 / 1k calls; gpt-4.1 $2 / $8
    Case('openai-web-search', 'openai', 'gpt-4.1', '2025-06-01T00:00:00Z', 'realtime', None, {'i': 100000, 'o': 10000, 'ws': 2}, '0.30'),  # same page: web search $10 / 1k calls
    Case('perplexity-request-fee', 'perplexity', 'sonar', '2025-06-01T00:00:00Z', 'realtime', None, {'i': 1000, 'o': 500}, '0.0135'),  # https://docs.perplexity.ai/guides/pricing: Sonar $1 / $1, $12 / 1k requests (high context)
    Case('perplexity-failed-request', 'perplexity', 'sonar', '2025-06-01T00:00:00Z', 'realtime', None, {'i': 1000, 'o': 0}, '0.001', status='error'),  # a failed request pays no request fee
    Case('bedrock-global-profile', 'bedrock', 'global.anthropic.claude-sonnet-4-5-20250929-v1:0', '2025-11-01T00:00:00Z', 'realtime', None, {'i': 100000, 'o': 10000}, '0.45', inference_profile='global.anthropic.claude-sonnet-4-5-20250929-v1:0'),  # https://aws.amazon.com/bedrock/pricing/: global cross-region $3 / $15
    Case('bedrock-geo-profile', 'bedrock', 'us.anthropic.claude-sonnet-4-5-20250929-v1:0', '2025-11-01T00:00:00Z', 'realtime', None, {'i': 100000, 'o': 10000}, '0.495', inference_profile='us.anthropic.claude-sonnet-4-5-20250929-v1:0'),  # geographic (and in-region) endpoints: 10 % premium, $3.30 / $16.50
]

# Negotiated and self-hosted prices, and what the catalog cannot express, as an overrides file holds them.
OVERRIDES = """\
overrides:
  - {id: acme-gpt4o, provider: openai, model: gpt-4o, customer: acme, effective_from: 2025-01-01,
     effective_to: 2026-01-01, discount_percent: 20}
  - {id: llama-70b, provider: self-hosted, model: acme-llama-70b, effective_from: 2025-01-01,
     prices: {input: 0.2, cached_input: 0.05, output: 0.6}}
  # the catalog lacks Claude Sonnet 4's 1M-context tier: above 200k input tokens $6 / $22.50
  # (https://docs.anthropic.com/en/docs/about-claude/pricing#long-context-pricing)
  - id: sonnet-4-long-context
    provider: anthropic
    model: claude-sonnet-4-0
    effective_from: 2025-08-12
    prices:
      input: 3
      output: 15
      cached_input: 0.3
      cache_write: 3.75
      cache_write_1h: 6
      tiers:
        - {above_input_tokens: 200000, input: 6, output: 22.5, cached_input: 0.6, cache_write: 7.5,
           cache_write_1h: 12}
  # OpenAI's code interpreter: $0.03 per container (https://platform.openai.com/docs/pricing#built-in-tools)
  - {id: openai-code-interpreter, provider: openai, model: "*", effective_from: 2025-03-11,
     fees_per_call: {code_execution: 0.03}}
  # Vertex AI: Claude on regional endpoints costs 10 % more than on the global one
  # (https://cloud.google.com/vertex-ai/generative-ai/pricing#claude-models)
  - {id: vertex-regional, provider: vertex_ai, model: "claude-sonnet-4-5*", region: "*-*",
     effective_from: 2025-09-29, premium_percent: 10}
  # DeepSeek's off-peak window, 16:30-00:30 UTC until 2025-09-05: deepseek-reasoner $0.135 / $0.035 / $0.55
  # (https://api-docs.deepseek.com/quick_start/pricing, the February 2025 table)
  - {id: deepseek-night, provider: deepseek, model: deepseek-reasoner, effective_from: 2025-02-26,
     effective_to: 2025-09-05, hours: {start: "16:30", end: "00:30"},
     prices: {input: 0.135, cached_input: 0.035, output: 0.55}}
"""
CASES += [
    Case("override-negotiated-discount", "openai", "gpt-4o", "2025-06-01T00:00:00Z", "realtime", None,
         {"i": 10_000, "c": 4_000, "o": 1_000}, "0.024", "acme"),  # 20 % off: $2.00 / $1.00 / $8.00
    Case("override-expired", "openai", "gpt-4o", "2026-02-01T00:00:00Z", "realtime", None,
         {"i": 10_000, "c": 4_000, "o": 1_000}, "0.03", "acme"),  # effective_to passed: list $2.50 / $1.25 / $10
    Case("override-self-hosted", "self-hosted", "acme-llama-70b", "2025-06-01T00:00:00Z", "realtime", None,
         {"i": 100_000, "c": 50_000, "o": 10_000}, "0.0185"),  # $0.20 / $0.05 / $0.60
    Case("override-context-tier-below", "anthropic", "claude-sonnet-4-20250514", "2025-09-01T00:00:00Z", "realtime",
         None, {"i": 200_000, "c": 100_000, "o": 5_000}, "0.405"),  # at 200k: $3 / $0.30 / $15
    Case("override-context-tier-above", "anthropic", "claude-sonnet-4-20250514", "2025-09-01T00:00:00Z", "realtime",
         None, {"i": 300_000, "c": 100_000, "o": 5_000}, "1.3725"),  # above 200k: $6 / $0.60 / $22.50 on all
    Case("override-code-interpreter", "openai", "gpt-4.1", "2025-06-01T00:00:00Z", "realtime", None,
         {"i": 100_000, "o": 10_000, "ce": 2, "fs": 4}, "0.35"),  # 2 containers $0.06 + file search $0.01
    Case("override-vertex-regional", "vertex_ai", "claude-sonnet-4-5@20250929", "2025-11-01T00:00:00Z", "realtime",
         None, {"i": 100_000, "o": 10_000}, "0.495", region="us-east5"),  # $3.30 / $16.50
    Case("override-vertex-global", "vertex_ai", "claude-sonnet-4-5@20250929", "2025-11-01T00:00:00Z", "realtime",
         None, {"i": 100_000, "o": 10_000}, "0.45", region="global"),  # the global endpoint: $3 / $15
    Case("override-off-peak-window", "deepseek", "deepseek-reasoner", "2025-03-01T17:00:00Z", "realtime", None,
         {"i": 100_000, "o": 10_000}, "0.019"),  # off-peak: $0.135 / $0.55
    Case("override-off-peak-wraps-midnight", "deepseek", "deepseek-reasoner", "2025-03-02T00:15:00Z", "realtime",
         None, {"i": 100_000, "o": 10_000}, "0.019"),
    Case("override-outside-window", "deepseek", "deepseek-reasoner", "2025-03-02T00:30:00Z", "realtime", None,
         {"i": 100_000, "o": 10_000}, "0.0769"),  # standard hours: $0.55 / $2.19
]

_FIELDS = {"i": "input_tokens", "c": "cached_input_tokens", "w": "cache_write_tokens", "w1": "cache_write_1h_tokens",
           "o": "output_tokens", "rs": "reasoning_tokens", "ws": "web_search_calls", "wf": "web_fetch_calls",
           "fs": "file_search_calls", "ce": "code_execution_calls"}

def _pricer() -> Pricer:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "overrides.yaml"
        path.write_text(OVERRIDES)
        return Pricer(load_overrides(path))


PRICER = _pricer()


def event_of(case: Case) -> UsageEvent:
    return UsageEvent(ts=datetime.fromisoformat(case.ts), provider=case.provider, model=case.model, mode=case.mode,
                      service_tier=case.service_tier, customer=case.customer, region=case.region,
                      inference_profile=case.inference_profile, status=case.status,
                      **{_FIELDS[k]: v for k, v in case.tokens.items()})


def test_there_are_at_least_forty_published_cases() -> None:
    assert len(CASES) >= 70 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_published_case(case: Case) -> None:
    record = PRICER.price(event_of(case))
    assert record.priced, record.unpriced_reason
    assert record.total_cost == Decimal(case.expected_usd)
    assert record.input_cost + record.output_cost + record.fee_cost == record.total_cost


def test_all_cases_in_one_batch_match_one_by_one() -> None:
    """The vectorised batch and the single-event path agree on every case."""
    from spendstream.pricing import UsageColumns

    events = [event_of(c) for c in CASES]
    batch = PRICER.price_columns(UsageColumns.from_events(events))
    assert batch.total_cost.to_pylist() == [Decimal(c.expected_usd) for c in CASES]
