"""One frozen, validated settings object per process, read from SPENDSTREAM_* variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# A TTL past 2106 overflows ClickHouse's DateTime and would expire every row at once.
MAX_RETENTION_DAYS = 18_250


class Settings(BaseSettings):
    """Configuration at the edge. Every field is an environment variable ``SPENDSTREAM_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="SPENDSTREAM_", frozen=True, extra="ignore")

    kafka_bootstrap: str | None = Field(
        default=None, description="host:port[,host:port]; unset means start a local broker (tansu)."
    )
    clickhouse_url: SecretStr | None = Field(
        default=None, description="http://user:pass@host:8123/db for a ClickHouse server; unset means embedded chdb."
    )
    store_url: str | None = Field(default=None, description=(
        "http://127.0.0.1:<port> of a `spendstream store` process sharing one embedded data directory."))
    clickhouse_cluster: str | None = Field(default=None, description=(
        "Run migrations ON CLUSTER with Replicated engines (one shard, many replicas)."))
    data_dir: Path = Field(default=Path("spendstream-data"), description="Where embedded chdb keeps its data.")
    usage_topic: str = "spendstream.usage"
    ledger_topic: str = Field(default="spendstream.ledger", description="Where emitters report what they delivered.")
    gpu_topic: str = Field(default="spendstream.gpu", description="Where GPU exporters send GpuSamples.")
    deployments_file: Path | None = Field(default=None, description=(
        "YAML: self-hosted deployments with GPU type, count and hourly price; see docs/gpu.md."))
    topic_partitions: int = Field(default=8, ge=1, description="Fixed at topic creation; caps the worker count.")
    consumer_group: str = "spendstream"
    batch_max_records: int = Field(default=100, ge=1, description=(
        "Kafka records per sink write at most (a block holds up to 1,000 events; a backlog fills the batch)."))
    batch_max_wait_s: float = Field(default=0.5, gt=0)
    web_port: int = Field(default=0, ge=0,
                          description="Worker's loopback HTTP port (queries, health); 0 picks a free one.")
    ops_address: str | None = Field(default=None, description=(
        "host:port where a worker serves /metrics (Prometheus), /healthz and /readyz (Kubernetes probes), e.g. "
        "0.0.0.0:9464 in a container; unset serves none. Only the query endpoint stays on loopback."))
    overrides_file: Path | None = Field(
        default=None,
        description="YAML/JSON price overrides (negotiated, fine-tuned, self-hosted); see docs/pricing.md.",
    )
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
    tag_value_limit: int = Field(default=1000, ge=1, description=(
        "Distinct values a free tag key may have per worker before new ones are stored as __other__."))
    dedup_horizon_s: float = Field(default=0.0, ge=0, description=(
        "A copy of a stored event_id whose ts lies within this many seconds of the stored copy's is the same "
        "event (identical: a re-delivery; different: a conflict, recorded and not applied); 0: only copies with "
        "the same ts, which every re-delivery and re-send of an event has. Each batch's check reads the raw "
        "events of its time range widened by this on both sides: at 50k events/s, 60 s is 6M rows a batch."))
    startup_timeout_s: float = Field(default=300.0, ge=0, description=(
        "How long a worker or `spendstream store` waits at start-up for Kafka, ClickHouse and the embedded "
        "data directory to answer before it exits with one clear error; 0 waits forever."))
    rollup_interval_s: float = Field(default=1.0, gt=0, description=(
        "How often the group's leader recomputes the rollup periods new events touched (sinks/rollups.py)."))
    raw_retention_days: int | None = Field(default=None, ge=1, le=MAX_RETENTION_DAYS, description=(
        "Days raw usage events (and conflicts, corrections) are kept; unset keeps them forever. Re-pricing "
        "needs the raw events of the period it re-prices."))
    rollup_retention_days: int | None = Field(default=None, ge=1, le=MAX_RETENTION_DAYS, description=(
        "Days the minute and hour rollups are kept; unset keeps them forever. At least the raw retention."))
    dead_letter_retention_days: int | None = Field(default=None, ge=1, le=MAX_RETENTION_DAYS, description=(
        "Days dead letters (and their replays) are kept; unset keeps them forever."))
    log_level: str = "info"

    @field_validator("overrides_file", "deployments_file", "alert_routes", "budgets_file", mode="before")
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


def ops_address(value: str) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[::]:9464``) as (host, port); ValueError saying what is wrong otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65_536:
        raise ValueError(f"expected host:port with a port from 1 to 65535 (e.g. 0.0.0.0:9464), got {value!r}")
    return host.strip("[]"), int(port)
