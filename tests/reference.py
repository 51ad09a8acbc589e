"""An independent price for a call: genai-prices' own per-event calculation, not our engine.

Tests compare spendstream's vectorised engine against this. It knows nothing of
overrides or of our batch rule; tests that exercise those compute by hand.
"""

from __future__ import annotations

from decimal import Decimal

from genai_prices import Usage, data_snapshot

from spendstream.schemas import UsageEvent

_SNAPSHOT = data_snapshot.get_snapshot()
_PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "google": "google", "azure": "azure"}


def genai_total(event: UsageEvent) -> Decimal:
    """The catalog's total for ``event`` at its own timestamp (standard mode and tier)."""
    provider_id = _PROVIDERS.get(event.provider, event.provider)
    _, model = _SNAPSHOT.find_provider_model(event.model, None, provider_id, None)
    usage = Usage(input_tokens=event.input_tokens, cache_read_tokens=event.cached_input_tokens,
                  cache_write_tokens=event.cache_write_tokens, cache_write_1h_tokens=event.cache_write_1h_tokens,
                  output_tokens=event.output_tokens, output_reasoning_tokens=event.reasoning_tokens)
    return model.get_prices(event.ts).calc_price(usage)["total_price"]
