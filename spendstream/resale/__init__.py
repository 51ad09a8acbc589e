"""Resale: customer-facing prices beside cost, margins, and usage in the shape billing systems ingest.

The price book (:mod:`.pricebook`) is loaded into ClickHouse (:mod:`.tables`), where the
parameterized view ``customer_margin`` prices every hour × customer × feature × model; the
Stripe export (:mod:`.stripe`) turns it into meter events.
"""
