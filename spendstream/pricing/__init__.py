"""Prices: from a maintained catalog, bundled, exact, in force at the event's time."""

from spendstream.pricing.catalog import Catalog
from spendstream.pricing.engine import PricedBatch, Pricer, UsageColumns
from spendstream.pricing.overrides import OverridesError, OverrideSet, load_overrides

__all__ = ["Catalog", "OverrideSet", "OverridesError", "PricedBatch", "Pricer", "UsageColumns", "load_overrides"]
