"""One frozen, validated settings object per process, read from SPENDSTREAM_* variables."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# A TTL past 2106 overflows ClickHouse's DateTime and would expire every row at once.
MAX_RETENTION_DAYS = 18_250

_CONFIG = SettingsConfigDict(env_prefix="SPENDSTREAM_", frozen=True, extra="ignore")


class KafkaSettings(BaseSettings):
    """Where the pipeline's records travel: Kafka and its topics."""

    model_config = _CONFIG

    kafka_bootstrap: str | None = Field(
        default=None, description="host:port[,host:port]; unset means start a local broker (tansu)."
    )
    usage_topic: str = "spendstream.usage"
    ledger_topic: str = Field(default="spendstream.ledger", description="Where emitters report what they delivered.")
    gpu_topic: str = Field(default="spendstream.gpu", description="Where GPU exporters send GpuSamples.")
    otlp_topic: str | None = Field(default=None, description=(
        "A topic of OTLP traces written by the OpenTelemetry Collector's Kafka exporter: workers turn its GenAI "
        "model-call spans into usage events (docs/ingest.md). Unset: not consumed."))
    otlp_encoding: Literal["auto", "otlp_proto", "otlp_json"] = Field(default="auto", description=(
        "The Kafka exporter's `encoding` on that topic; auto tells OTLP/JSON (starts with `{`) from protobuf."))
    otlp_attribution: dict[Literal["team", "feature", "customer", "environment", "service", "deployment"],
                           list[str]] = Field(default_factory=dict, description=(
        'JSON: span/resource attribute keys per attribution field, first found wins, e.g. '
        '{"team": ["k8s.namespace.name"]}; fields not given keep their defaults (docs/ingest.md).'))
    topic_partitions: int = Field(default=8, ge=1, description="Fixed at topic creation; caps the worker count.")
    consumer_group: str = "spendstream"


class StoreSettings(BaseSettings):
    """Where usage is stored: embedded chdb, a `spendstream store` process or a ClickHouse server, and for how long."""

    model_config = _CONFIG

    clickhouse_url: SecretStr | None = Field(
        default=None, description="http://user:pass@host:8123/db for a ClickHouse server; unset means embedded chdb."
    )
    store_url: str | None = Field(default=None, description=(
        "http://127.0.0.1:<port> of a `spendstream store` process sharing one embedded data directory."))
    clickhouse_cluster: str | None = Field(default=None, description=(
        "Run migrations ON CLUSTER with Replicated engines (one shard, many replicas)."))
    data_dir: Path = Field(default=Path("spendstream-data"), description="Where embedded chdb keeps its data.")
    startup_timeout_s: float = Field(default=300.0, ge=0, description=(
        "How long a worker or `spendstream store` waits at start-up for Kafka, ClickHouse and the embedded "
        "data directory to answer before it exits with one clear error; 0 waits forever."))
    raw_retention_days: int | None = Field(default=None, ge=1, le=MAX_RETENTION_DAYS, description=(
        "Days raw usage events (and conflicts, corrections) are kept; unset keeps them forever. Re-pricing "
        "needs the raw events of the period it re-prices."))
    rollup_retention_days: int | None = Field(default=None, ge=1, le=MAX_RETENTION_DAYS, description=(
        "Days the minute and hour rollups are kept; unset keeps them forever. At least the raw retention."))
    dead_letter_retention_days: int | None = Field(default=None, ge=1, le=MAX_RETENTION_DAYS, description=(
        "Days dead letters (and their replays) are kept; unset keeps them forever."))


class LoopbackSettings(BaseSettings):
    """The loopback HTTP port a worker or `spendstream store` serves queries and health on, and where a
    worker serves its metrics and probes."""

    model_config = _CONFIG

    web_port: int = Field(default=0, ge=0,
                          description="Worker's loopback HTTP port (queries, health); 0 picks a free one.")
    ops_address: str | None = Field(default=None, description=(
        "host:port where a worker serves /metrics (Prometheus), /healthz and /readyz (Kubernetes probes), e.g. "
        "0.0.0.0:9464 in a container; unset serves none. Only the query endpoint stays on loopback."))


class PipelineSettings(BaseSettings):
    """How a worker batches, prices, attributes, deduplicates and rolls up."""

    model_config = _CONFIG

    batch_max_records: int = Field(default=100, ge=1, description=(
        "Kafka records per sink write at most (a block holds up to 1,000 events; a backlog fills the batch)."))
    batch_max_wait_s: float = Field(default=0.5, gt=0)
    overrides_file: Path | None = Field(
        default=None,
        description="YAML/JSON price overrides (negotiated, fine-tuned, self-hosted); see docs/pricing.md.",
    )
    deployments_file: Path | None = Field(default=None, description=(
        "YAML: self-hosted deployments with GPU type, count and hourly price; see docs/gpu.md."))
    tag_value_limit: int = Field(default=1000, ge=1, description=(
        "Distinct values a free tag key may have per worker before new ones are stored as __other__."))
    dedup_horizon_s: float = Field(default=0.0, ge=0, description=(
        "A copy of a stored event_id whose ts lies within this many seconds of the stored copy's is the same "
        "event (identical: a re-delivery; different: a conflict, recorded and not applied); 0: only copies with "
        "the same ts, which every re-delivery and re-send of an event has. Each batch's check reads the raw "
        "events of its time range widened by this on both sides: at 50k events/s, 60 s is 6M rows a batch."))
    rollup_interval_s: float = Field(default=1.0, gt=0, description=(
        "How often the group's leader recomputes the rollup periods new events touched (sinks/rollups.py)."))
    billing_policy: Literal["computed", "provider", "provider_when_present"] = Field(
        default="computed", description=(
            "Which cost of an event is billed (usage_events.billed_cost, what margins and the Stripe export use): "
            "computed (the price book's, default), provider (the provider-reported provider_cost_usd; an event "
            "without one has no billed cost), provider_when_present (the provider's where reported, else "
            "computed). Recorded per event (billing_policy column); see docs/provider_cost.md."))


class AlertSettings(BaseSettings):
    """Detection and alert delivery."""

    model_config = _CONFIG

    alert_routes: Path | None = Field(default=None, description=(
        "YAML: alert destinations (Slack, PagerDuty, webhook) and which alerts go where; see docs/alerts.md."))
    budgets_file: Path | None = Field(default=None, description=(
        "YAML: daily/monthly budgets per team, feature or customer, evaluated with the other detectors."))
    detect_interval_s: float = Field(default=60.0, gt=0, description=(
        "How often the worker group's leader runs the detectors (budgets, retry storms, spend anomalies), "
        "storing new alerts, and then, with SPENDSTREAM_ALERT_ROUTES set, one delivery pass."))
    alert_pass_deadline_s: float = Field(default=30.0, gt=0, le=45.0, description=(
        "Seconds one delivery pass in a worker may spend sending: what a destination that never answers costs "
        "at most. A leader that is handing over waits for its pass to end, and the group waits for it at most "
        "faust's rebalance timeout (60 s): hence the bound."))
    alert_request_timeout_s: float = Field(default=10.0, gt=0, description=(
        "Seconds a worker waits for one destination to answer (at most what is left of the pass). A receiver "
        "that accepts a request after the sender gave up on it gets that alert again on a later pass."))
    cost_drift_relative: float = Field(default=0.02, ge=0, description=(
        "cost_drift fires when provider-reported and computed cost of a provider/model differ by more than this "
        "fraction of the larger (and by more than cost_drift_absolute_usd)."))
    cost_drift_absolute_usd: Decimal = Field(default=Decimal("0.01"), ge=0, description=(
        "cost_drift ignores differences up to this many USD in a window, however large relatively."))


class ExportSettings(BaseSettings):
    """What exports say about you that the events do not."""

    model_config = _CONFIG

    focus_billing_accounts: dict[str, str] = Field(default_factory=dict, description=(
        "JSON: the account each provider bills you under, by catalog provider id, for FOCUS's BillingAccountId, "
        "e.g. {\"openai\": \"org-…\", \"anthropic\": \"…\", \"*\": \"…\"} (\"*\": any other provider); "
        "a provider with none exports as unassigned:<provider>."))
    pricebook_file: Path | None = Field(default=None, description=(
        "YAML: resale prices per customer or plan (markup or sell prices) and Stripe meters; loaded with "
        "`spendstream pricebook load`; see docs/resale.md."))


class IngestSettings(BaseSettings):
    """`spendstream ingest`: HTTP ingest in front of Kafka (docs/ingest.md)."""

    model_config = _CONFIG

    ingest_host: str = Field(default="127.0.0.1", description=(
        "Address `spendstream ingest` binds (0.0.0.0 for every interface, as in a container)."))
    ingest_port: int = Field(default=8470, ge=0, le=65535, description="Port of `spendstream ingest`; 0 picks one.")
    ingest_token: SecretStr | None = Field(default=None, description=(
        "Bearer token `spendstream ingest` requires (32+ characters); or SPENDSTREAM_INGEST_TOKEN_FILE."))
    ingest_token_file: Path | None = Field(default=None, description=(
        "File holding that token, owned by the user the server runs as, mode 0600."))
    ingest_max_body_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576, description=(
        "Largest request body `spendstream ingest` reads; larger ones get 413."))
    ingest_produce_timeout_s: float = Field(default=10.0, gt=0, description=(
        "How long `spendstream ingest` waits for Kafka to acknowledge a request's events before it answers 503."))


class Settings(KafkaSettings, StoreSettings, LoopbackSettings, PipelineSettings, AlertSettings, ExportSettings,
               IngestSettings):
    """Configuration at the edge. Every field is an environment variable ``SPENDSTREAM_<NAME>``.

    The groups it is made of say which commands read what (``spendstream worker --help``
    lists them from :data:`COMMAND_SETTINGS`).
    """

    model_config = _CONFIG

    log_level: str = Field(default="info", description="debug, info, warning or error.")

    @field_validator("overrides_file", "deployments_file", "alert_routes", "budgets_file", "ingest_token_file",
                     "pricebook_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value  # `SPENDSTREAM_OVERRIDES_FILE=` in a compose file means "none"

    @field_validator("ops_address")
    @classmethod
    def _host_and_port(cls, value: str | None) -> str | None:
        if value is not None:
            ops_address(value)  # raises ValueError naming what is wrong
        return value

    @property
    def embedded(self) -> bool:
        """True when this process opens the embedded data directory itself."""
        return self.clickhouse_url is None and self.store_url is None


# The settings groups each long-running command reads, beside ``log_level``: their --help lists these variables.
COMMAND_SETTINGS: dict[str, tuple[type[BaseSettings], ...]] = {
    "up": (KafkaSettings, StoreSettings, LoopbackSettings, PipelineSettings, AlertSettings),
    "worker": (KafkaSettings, StoreSettings, LoopbackSettings, PipelineSettings, AlertSettings),
    "store": (StoreSettings, LoopbackSettings),
    "notify": (StoreSettings, AlertSettings),
}


def ops_address(value: str) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[::]:9464``) as (host, port); ValueError saying what is wrong otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65_536:
        raise ValueError(f"expected host:port with a port from 1 to 65535 (e.g. 0.0.0.0:9464), got {value!r}")
    return host.strip("[]"), int(port)
