"""The bundled price catalog (genai-prices), used offline.

genai-prices ships its data inside the wheel; we only ever call its snapshot
and never ask it to update, so nothing is fetched at run time. The version is
pinned in pyproject.toml; every CostRecord names the catalog version it used.
"""

from __future__ import annotations

from decimal import Decimal

import genai_prices
from genai_prices import Usage

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
    """Prices a UsageEvent at its own timestamp. An unknown model is flagged, never priced 0."""

    name = CATALOG_NAME
    version = genai_prices.__version__

    def price(self, event: UsageEvent) -> CostRecord:
        provider_id = PROVIDER_IDS.get(event.provider.lower())
        if provider_id is None:
            return self._unpriced(event, f"provider {event.provider!r} is not in the catalog")
        usage = Usage(
            input_tokens=event.input_tokens,
            cache_read_tokens=event.cached_input_tokens,
            cache_write_tokens=event.cache_write_tokens,
            output_tokens=event.output_tokens,
        )
        try:
            calc = genai_prices.calc_price(
                usage, event.model, provider_id=provider_id, genai_request_timestamp=event.ts
            )
        except LookupError:
            return self._unpriced(event, f"model {event.model!r} has no price for provider {provider_id!r}")
        prices = calc.model_price
        return CostRecord(
            event=event,
            priced=True,
            catalog=self.name,
            catalog_version=self.version,
            price_model_id=calc.model.id,
            price_provider_id=calc.provider.id,
            priced_at_ts=event.ts,
            input_price_per_mtok=_flat(getattr(prices, "input_mtok", None)),
            cached_input_price_per_mtok=_flat(getattr(prices, "cache_read_mtok", None)),
            cache_write_price_per_mtok=_flat(getattr(prices, "cache_write_mtok", None)),
            output_price_per_mtok=_flat(getattr(prices, "output_mtok", None)),
            input_cost=calc.input_price,
            output_cost=calc.output_price,
            total_cost=calc.total_price,
        )

    def _unpriced(self, event: UsageEvent, reason: str) -> CostRecord:
        return CostRecord(
            event=event,
            priced=False,
            unpriced_reason=reason,
            catalog=self.name,
            catalog_version=self.version,
            priced_at_ts=event.ts,
        )


def _flat(price: object) -> Decimal | None:
    """A unit price when it is one number; tiered prices are reported as None here."""
    return price if isinstance(price, Decimal) else None
