"""The tables and views of money beyond the price (migration "money II"): the provider's own cost
beside the computed one and the cost billed by policy, the provider's invoice lines, the resale
price book and the margin view over it.
"""

from __future__ import annotations

MONEY = "Decimal(38, 18)"  # as sinks/migrations.py stores money (it imports this module)

_INVOICE_LINES = f"""
    CREATE TABLE IF NOT EXISTS invoice_lines (
        source LowCardinality(String) COMMENT 'openai_costs, anthropic_cost_report or focus_csv',
        day Date COMMENT 'UTC day the charge period starts in',
        provider LowCardinality(String) COMMENT 'catalog provider id (openai, anthropic, aws…)',
        model String COMMENT 'empty when the line names no model (tool fees, ungrouped totals)',
        line_key String COMMENT 'the line''s identity within the export',
        occurrence UInt32 COMMENT 'among lines of the file with the same key',
        period_start DateTime64(3, 'UTC'),
        period_end Nullable(DateTime64(3, 'UTC')),
        charge_category LowCardinality(String) COMMENT 'FOCUS ChargeCategory; Usage is compared with metered cost',
        amount_usd {MONEY},
        file_name String,
        file_digest String COMMENT 'sha256 of the imported file',
        imported_at DateTime64(3, 'UTC')
    )
    ENGINE = ReplacingMergeTree(imported_at)
    ORDER BY (source, day, provider, model, line_key, occurrence)
    """

_INVOICE_IMPORTS = f"""
    CREATE TABLE IF NOT EXISTS invoice_imports (
        file_digest String,
        file_name String,
        source LowCardinality(String),
        lines UInt64,
        total_usd {MONEY},
        first_day Nullable(Date),
        last_day Nullable(Date),
        imported_at DateTime64(3, 'UTC')
    )
    ENGINE = ReplacingMergeTree(imported_at)
    ORDER BY file_digest
    """


# The resale price book (spendstream/resale): versions of the file, its rules in file order
# (the last rule in force that matches wins) and its customers. The current book is the one
# loaded last; margins are read through the parameterized view customer_margin.
_PRICEBOOK = (
    """
    CREATE TABLE IF NOT EXISTS pricebook_loads (
        version String COMMENT 'sha256 of the price book file',
        path String,
        rules UInt32,
        customers UInt32,
        stripe_meters String COMMENT 'the book''s stripe.meters as JSON: what `export stripe` writes',
        loaded_at DateTime64(3, 'UTC')
    )
    ENGINE = ReplacingMergeTree(loaded_at)
    ORDER BY version
    """,
    f"""
    CREATE TABLE IF NOT EXISTS pricebook_rules (
        version String,
        position UInt32 COMMENT 'order in the file, from 1: the highest matching rule in force wins',
        rule_id String,
        customer String COMMENT 'empty: any',
        plan String COMMENT 'empty: any',
        provider_regex String COMMENT 'the rule''s provider glob as an anchored RE2 pattern',
        model_regex String COMMENT 'the rule''s model glob as an anchored RE2 pattern',
        effective_from DateTime64(3, 'UTC'),
        effective_to Nullable(DateTime64(3, 'UTC')),
        markup Nullable(Decimal(18, 6)) COMMENT '1 + markup_percent / 100, applied to billed cost',
        input_per_token Nullable({MONEY}),
        cached_input_per_token Nullable({MONEY}),
        output_per_token Nullable({MONEY}),
        per_request Nullable({MONEY}) COMMENT 'per successful attempt'
    )
    ENGINE = ReplacingMergeTree
    ORDER BY (version, position)
    """,
    """
    CREATE TABLE IF NOT EXISTS pricebook_customers (
        version String,
        customer String,
        plan String,
        stripe_customer_id String
    )
    ENGINE = ReplacingMergeTree
    ORDER BY (version, customer)
    """,
)
_BOOK = "(SELECT argMax(version, loaded_at) FROM pricebook_loads FINAL)"
_MARGIN_USAGE = """(
    SELECT toStartOfHour(ts) AS hour, ifNull(customer, '') AS customer, ifNull(feature, '') AS feature,
           provider, model, count() AS attempts, countIf(status = 'ok') AS ok_attempts,
           sum(input_tokens) AS input_tokens, sum(cached_input_tokens) AS cached_input_tokens,
           sum(output_tokens) AS output_tokens,
           if(count(billed_cost) = 0, NULL, sum(billed_cost)) AS cost_usd,
           countIf(billed_cost IS NULL) AS unbilled_attempts
    FROM usage_events FINAL
    WHERE ts >= {since:DateTime64(3, 'UTC')} AND ts < {until:DateTime64(3, 'UTC')}
    GROUP BY hour, customer, feature, provider, model)"""
_MARGIN_KEYS = ("hour", "customer", "feature", "provider", "model")
# Margin per hour, customer, feature and model: billed cost beside what the price book sells it
# for. `SELECT customer, feature, sum(revenue_usd), sum(cost_usd), sum(margin_usd) FROM
# customer_margin(since = '2026-11-01 00:00:00', until = '2026-12-01 00:00:00') GROUP BY ALL`.
# revenue_usd is NULL where no rule applies or the cost is unknown (never 0).
_CUSTOMER_MARGIN = f"""
    CREATE OR REPLACE VIEW customer_margin AS
    SELECT u.hour AS hour, u.customer AS customer, u.feature AS feature, u.provider AS provider, u.model AS model,
           u.attempts AS attempts, u.ok_attempts AS ok_attempts, u.input_tokens AS input_tokens,
           u.cached_input_tokens AS cached_input_tokens, u.output_tokens AS output_tokens,
           u.cost_usd AS cost_usd, u.unbilled_attempts AS unbilled_attempts,
           nullIf(r.rule_id, '') AS rule_id,
           if(r.markup IS NOT NULL, CAST(u.cost_usd * r.markup AS Nullable({MONEY})),
              (u.input_tokens - u.cached_input_tokens) * r.input_per_token
              + u.cached_input_tokens * ifNull(r.cached_input_per_token, r.input_per_token)
              + u.output_tokens * r.output_per_token + u.ok_attempts * r.per_request) AS revenue_usd,
           revenue_usd - u.cost_usd AS margin_usd
    FROM {_MARGIN_USAGE} AS u
    LEFT JOIN (
        SELECT u.hour AS hour, u.customer AS customer, u.feature AS feature, u.provider AS provider,
               u.model AS model, max(r.position) AS position
        FROM {_MARGIN_USAGE} AS u
        LEFT JOIN (SELECT customer, plan FROM pricebook_customers FINAL WHERE version = {_BOOK}) AS p
            ON u.customer = p.customer
        CROSS JOIN (SELECT * FROM pricebook_rules FINAL WHERE version = {_BOOK}) AS r
        WHERE (r.customer = '' OR r.customer = u.customer) AND (r.plan = '' OR r.plan = p.plan)
          AND match(u.provider, r.provider_regex) AND match(u.model, r.model_regex)
          AND u.hour >= r.effective_from AND (r.effective_to IS NULL OR u.hour < r.effective_to)
        GROUP BY hour, customer, feature, provider, model
    ) AS m ON {" AND ".join(f"u.{k} = m.{k}" for k in _MARGIN_KEYS)}
    LEFT JOIN (SELECT * FROM pricebook_rules FINAL WHERE version = {_BOOK}) AS r ON m.position = r.position
    """

_PROVIDER_COST = "toDecimal128OrNull(provider_cost_usd, 18)"
MONEY_II = (
    "ALTER TABLE usage_events "
    "ADD COLUMN IF NOT EXISTS provider_cost_usd Nullable(String) COMMENT "
    "'what the provider or a gateway reported this call cost, USD, as the decimal text it sent', "
    "ADD COLUMN IF NOT EXISTS provider_cost_source LowCardinality(Nullable(String)) COMMENT "
    "'who reported provider_cost_usd, e.g. openrouter:usage.cost', "
    f"ADD COLUMN IF NOT EXISTS provider_cost Nullable({MONEY}) MATERIALIZED {_PROVIDER_COST} COMMENT "
    "'provider_cost_usd as an exact number', "
    "ADD COLUMN IF NOT EXISTS billing_policy LowCardinality(String) DEFAULT 'computed' COMMENT "
    "'SPENDSTREAM_BILLING_POLICY of the worker that stored the event: computed, provider, provider_when_present', "
    f"ADD COLUMN IF NOT EXISTS billed_cost Nullable({MONEY}) MATERIALIZED multiIf("
    f"billing_policy = 'provider', {_PROVIDER_COST}, "
    f"billing_policy = 'provider_when_present', ifNull({_PROVIDER_COST}, total_cost), total_cost) COMMENT "
    "'the cost billed under billing_policy; NULL when that cost is unknown (never 0)', "
    "ADD COLUMN IF NOT EXISTS billed_from LowCardinality(Nullable(String)) MATERIALIZED multiIf("
    "billing_policy = 'provider' OR (billing_policy = 'provider_when_present' AND provider_cost_usd IS NOT NULL), "
    "if(provider_cost_usd IS NULL, NULL, 'provider'), if(total_cost IS NULL, NULL, 'computed')) COMMENT "
    "'which cost billed_cost is: provider or computed; NULL when none'",
    # the provider's bill, imported from its cost exports (spendstream/invoices)
    _INVOICE_LINES, _INVOICE_IMPORTS,
    # the resale price book beside cost (spendstream/resale)
    *_PRICEBOOK, _CUSTOMER_MARGIN,
)
