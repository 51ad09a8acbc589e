"""Where facts land: ClickHouse, embedded (chdb) or a server, behind one interface."""

from __future__ import annotations

from spendstream.settings import Settings
from spendstream.sinks.store import QueryResult, Store, StoreError


def open_store(settings: Settings) -> Store:
    """The configured ClickHouse: a server (SPENDSTREAM_CLICKHOUSE_URL), a `spendstream store` process
    (SPENDSTREAM_STORE_URL, with the secret in SPENDSTREAM_DATA_DIR), else embedded chdb in this process."""
    if settings.clickhouse_url is not None:
        from spendstream.sinks.server import ServerStore

        return ServerStore(settings.clickhouse_url.get_secret_value())
    if settings.store_url is not None:
        from spendstream.sinks.host import RemoteStore
        from spendstream.sinks.loopback import SecretMissing, SecretUnreadable, read_secret
        from spendstream.sinks.store import StoreUnavailable

        try:  # the host's secret sits in its data directory, which must be ours too
            return RemoteStore(settings.store_url, read_secret(settings.data_dir))
        except SecretMissing as exc:  # the store host makes it when it starts: worth waiting for
            raise StoreUnavailable(f"cannot talk to the store at {settings.store_url} yet: {exc}") from exc
        except SecretUnreadable as exc:
            raise StoreError(f"cannot talk to the store at {settings.store_url}: {exc}") from exc
    from spendstream.sinks.embedded import EmbeddedStore

    return EmbeddedStore(settings.data_dir)


__all__ = ["QueryResult", "Store", "StoreError", "open_store"]
