"""The bundled price catalog (genai-prices), used offline.

genai-prices ships its data inside the wheel; we only ever call its snapshot
and never ask it to update, so nothing is fetched at run time. The version is
pinned in pyproject.toml; every CostRecord names the catalog version it used.
"""

from __future__ import annotations

import genai_prices
from genai_prices import Usage, data_snapshot
from genai_prices.types import ModelPrice

from spendstream.pricing.rates import TokenRates
from spendstream.schemas.cost import CostRecord
from spendstream.schemas.usage import UsageEvent

CATALOG_NAME = "genai-prices"

# Provider names services commonly send, mapped to the catalog's provider ids.
PROVIDER_IDS = {
    "openai": "openai",
    "azure": "azure",
    "azure_openai": "azure",
    "anthropic": "anthropic",
    "google": "google",
    "gemini": "google",
    "vertex": "google",
    "bedrock": "aws",
    "aws": "aws",
    "mistral": "mistral",
    "groq": "groq",
    "deepseek": "deepseek",
}


class Catalog:
    """Prices a UsageEvent at its own timestamp. An unknown model is flagged, never priced 0.

    The price in force at ``event.ts`` is looked up in the catalog for every event
    (genai-prices caches the model match); the arithmetic takes the per-token-rate
    fast path when the price allows it and genai-prices' own calculation otherwise.
    """

    name = CATALOG_NAME
    version = genai_prices.__version__

    def __init__(self) -> None:
        self._snapshot = data_snapshot.get_snapshot()
        # Keyed by the ModelPrice object; the object is kept so its id stays unique.
        self._rates: dict[int, tuple[ModelPrice, TokenRates | None]] = {}

    def price(self, event: UsageEvent) -> CostRecord:
        provider_id = PROVIDER_IDS.get(event.provider.lower())
        if provider_id is None:
            return self._unpriced(event, f"provider {event.provider!r} is not in the catalog")
        try:
            provider, model = self._snapshot.find_provider_model(event.model, None, provider_id, None)
        except LookupError:
            return self._unpriced(event, f"model {event.model!r} has no price for provider {provider_id!r}")
        prices = model.get_prices(event.ts)
        rates = self._token_rates(prices)
        if rates is not None:
            applied = rates.applied(event.input_tokens)
            input_cost, output_cost = applied.cost(
                input_tokens=event.input_tokens, cached_input_tokens=event.cached_input_tokens,
                cache_write_tokens=event.cache_write_tokens, output_tokens=event.output_tokens)
        else:
            calc = prices.calc_price(usage_of(event))
            input_cost, output_cost = calc["input_price"], calc["output_price"]
            applied = None
        return CostRecord(
            event=event,
            priced=True,
            catalog=self.name,
            catalog_version=self.version,
            price_model_id=model.id,
            price_provider_id=provider.id,
            priced_at_ts=event.ts,
            input_price_per_mtok=applied.input if applied else None,
            cached_input_price_per_mtok=applied.cached_input if applied else None,
            cache_write_price_per_mtok=applied.cache_write if applied else None,
            output_price_per_mtok=applied.output if applied else None,
            input_cost=input_cost,
            output_cost=output_cost,
            total_cost=input_cost + output_cost,
        )

    def _token_rates(self, prices: ModelPrice) -> TokenRates | None:
        cached = self._rates.get(id(prices))
        if cached is None:
            cached = self._rates[id(prices)] = (prices, TokenRates.of(prices))
        return cached[1]

    def _unpriced(self, event: UsageEvent, reason: str) -> CostRecord:
        return CostRecord(
            event=event,
            priced=False,
            unpriced_reason=reason,
            catalog=self.name,
            catalog_version=self.version,
            priced_at_ts=event.ts,
        )


def usage_of(event: UsageEvent) -> Usage:
    """The event's token counts as genai-prices reads them (same inclusive meanings)."""
    return Usage(
        input_tokens=event.input_tokens,
        cache_read_tokens=event.cached_input_tokens,
        cache_write_tokens=event.cache_write_tokens,
        output_tokens=event.output_tokens,
        output_reasoning_tokens=event.reasoning_tokens,
    )
