"""Prices: from a maintained catalog, bundled, exact, in force at the event's time."""

from spendstream.pricing.catalog import Catalog

__all__ = ["Catalog"]
