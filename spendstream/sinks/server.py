"""A ClickHouse server or cluster through clickhouse-connect."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import pyarrow as pa

from spendstream.sinks.readonly import as_write_refused
from spendstream.sinks.store import (
    INSERT_SETTINGS,
    QueryResult,
    StoreError,
    StoreUnavailable,
    arrow_table,
    query_result,
)

# ClickHouse error codes that mean "not now" rather than "no": TIMEOUT_EXCEEDED,
# TOO_MANY_SIMULTANEOUS_QUERIES, SOCKET_TIMEOUT, NETWORK_ERROR, and a replica or an
# ON CLUSTER statement waiting for (Zoo)Keeper: NO_ZOOKEEPER, TABLE_IS_READ_ONLY, KEEPER_EXCEPTION.
_UNAVAILABLE_CODES = frozenset({159, 202, 209, 210, 225, 242, 999})

# Sent as a query setting, so the read-only rule comes from the request itself.
_READ_ONLY = {"readonly": 1}


class ServerStore:
    """``url`` is ``http[s]://user:password@host:port/database``."""

    def __init__(self, url: str) -> None:
        try:
            import clickhouse_connect
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise StoreError("SPENDSTREAM_CLICKHOUSE_URL is set: pip install 'spendstream[server]'") from exc
        parts = urlsplit(url)
        try:
            port = parts.port or (8443 if parts.scheme == "https" else 8123)
        except ValueError:  # a port that is not a number
            port = None
        if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
            raise StoreError("SPENDSTREAM_CLICKHOUSE_URL must look like http://user:pass@host:8123/db")
        database = parts.path.strip("/") or "default"
        try:
            self._client = clickhouse_connect.get_client(
                host=parts.hostname,
                port=port,
                username=unquote(parts.username or "default"),
                password=unquote(parts.password or ""),
                secure=parts.scheme == "https",
            )
            self._client.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
        except Exception as exc:  # clickhouse-connect raises several unrelated types
            raise store_error(exc) from exc
        self._client.database = database

    def command(self, sql: str) -> None:
        try:
            self._client.command(sql)
        except Exception as exc:  # clickhouse-connect raises several unrelated types
            raise store_error(exc) from exc

    def query(self, sql: str, params: dict[str, Any] | None = None) -> QueryResult:
        return query_result(self, sql, params)

    def query_text(self, sql: str, params: dict[str, Any] | None = None, fmt: str = "PrettyCompact") -> str:
        try:
            raw = self._client.raw_query(sql, parameters=params, fmt=fmt)
        except Exception as exc:  # clickhouse-connect raises several unrelated types
            raise store_error(exc) from exc
        return raw.decode()

    def query_arrow(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table:
        try:
            raw = self._client.raw_query(sql, parameters=params, fmt="ArrowStream")
        except Exception as exc:  # clickhouse-connect raises several unrelated types
            raise store_error(exc) from exc
        return arrow_table(raw)

    def run_statement(self, sql: str, params: dict[str, Any] | None = None, fmt: str = "PrettyCompact", *,
                      write: bool = False) -> bytes:
        """See :meth:`Store.run_statement`. The server's HTTP interface refuses several
        statements and ``INTO OUTFILE`` itself; ``readonly=1`` goes with every read.

        ``readonly=1``, not 2: 2 would let the query change settings, and with them
        create temporary tables, which is what table functions (``url``, ``s3``, …) need.
        It may travel with the settings clickhouse-connect sends on every request: ClickHouse
        checks a request's settings against the session as it was before them.
        """
        try:
            return self._client.raw_query(sql, parameters=params, fmt=fmt, settings=None if write else _READ_ONLY)
        except Exception as exc:  # clickhouse-connect raises several unrelated types
            refusal = None if write else as_write_refused(exc)
            raise refusal or store_error(exc) from exc

    def insert_arrow(self, table: str, data: pa.Table) -> None:
        try:
            self._client.insert_arrow(table, data, settings=INSERT_SETTINGS)
        except Exception as exc:  # clickhouse-connect raises several unrelated types
            raise store_error(exc, f"insert into {table} failed: ") from exc

    def close(self) -> None:
        self._client.close()


def store_error(exc: Exception, prefix: str = "") -> StoreError:
    """A clickhouse-connect failure as :class:`StoreUnavailable` when ClickHouse did not answer (the
    connection failed or timed out) or answered "not now"; else as :class:`StoreError`, which waiting
    will not change (wrong credentials, bad SQL)."""
    import urllib3.exceptions

    transport = isinstance(exc.__cause__ or exc.__context__, (urllib3.exceptions.HTTPError, OSError))
    unavailable = transport or getattr(exc, "code", None) in _UNAVAILABLE_CODES
    return (StoreUnavailable if unavailable else StoreError)(f"{prefix}{exc}")
