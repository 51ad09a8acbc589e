"""Start-up waits for its dependencies: Kafka, ClickHouse, the embedded data directory.

Compose, Kubernetes and systemd start things side by side, so a worker or
``spendstream store`` may come up before Kafka or ClickHouse answers, or while the
previous worker still holds the embedded data directory. Instead of exiting with a
traceback it checks again with jittered exponential backoff, says once a minute
what it waits for and why, and at the deadline (``SPENDSTREAM_STARTUP_TIMEOUT_S``,
shared by everything it waits for; 0 waits forever) raises one
:class:`StartupError` naming the dependency. Only "not there yet" is retried:
refused, timed out, starting, locked. A mistake that waiting cannot fix (a bad
URL, wrong credentials, a statement ClickHouse rejects) fails at once.
"""

from __future__ import annotations

import logging
import socket
import time
import urllib.error
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

from spendstream.emitter.backoff import backoff_s
from spendstream.kafka_admin import ensure_topics, transient
from spendstream.settings import Settings
from spendstream.sinks import Store, StoreError, open_store
from spendstream.sinks.endpoint import EndpointUnavailable
from spendstream.sinks.migrations import migrate
from spendstream.sinks.store import StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")


class NotReady(Exception):
    """Raised by a check: the dependency is not there yet. The message is the reason, for people."""


class StartupError(RuntimeError):
    """A dependency did not answer by the deadline, or refused start-up for a reason waiting cannot fix.

    The message is one line for a person; ``dependency`` names what failed (never with credentials).
    """

    def __init__(self, message: str, *, dependency: str) -> None:
        super().__init__(message)
        self.dependency = dependency


class Startup:
    """One start-up deadline, shared by every dependency a process waits for.

    ``timeout_s`` 0 waits forever. A check runs to its own end, so the deadline may be
    passed by at most one check's own timeout.
    """

    def __init__(self, *, timeout_s: float, log_every_s: float = 60.0, retry_base_s: float = 0.25,
                 retry_cap_s: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.timeout_s = timeout_s
        self.log_every_s = log_every_s
        self._retry_base_s = retry_base_s
        self._retry_cap_s = retry_cap_s
        self._clock = clock
        self._sleep = sleep
        self._deadline = None if timeout_s == 0 else clock() + timeout_s

    def wait_for(self, dependency: str, check: Callable[[], T]) -> T:
        """``check()``'s result, once it returns instead of raising :class:`NotReady`.

        Logs the first wait at once and then one line per ``log_every_s`` at most. Raises
        :class:`StartupError` at the deadline; a ``StartupError`` from ``check`` (a refusal)
        and any other exception (a bug) pass through at once.
        """
        started = self._clock()
        next_log_at = started
        attempt = 0
        while True:
            try:
                result = check()
            except NotReady as exc:
                reason = str(exc)
            else:
                if attempt:
                    log.info("%s answered after %.0f s", dependency, self._clock() - started)
                return result
            now = self._clock()
            left_s = None if self._deadline is None else self._deadline - now
            if left_s is not None and left_s <= 0:
                raise StartupError(
                    f"gave up waiting for {dependency} after {self.timeout_s:g} s: {reason} "
                    "(SPENDSTREAM_STARTUP_TIMEOUT_S sets how long start-up waits; 0 waits forever)",
                    dependency=dependency)
            if now >= next_log_at:
                log.warning("waiting for %s: %s; retrying, %s", dependency, reason,
                            "with no deadline" if left_s is None else f"giving up in {left_s:.0f} s")
                next_log_at = now + self.log_every_s
            delay_s = backoff_s(attempt, base_s=self._retry_base_s, cap_s=self._retry_cap_s)
            attempt += 1
            self._sleep(delay_s if left_s is None else min(delay_s, left_s))


def wait_for_kafka(startup: Startup, bootstrap_servers: str, topics: dict[str, int]) -> None:
    """Create ``topics`` (name: partitions) once a broker at ``bootstrap_servers`` answers."""
    dependency = f"Kafka at {bootstrap_servers}"
    addresses = _addresses(bootstrap_servers, dependency)

    def check() -> None:
        # A plain TCP look first: while nothing listens, aiokafka would log an error per attempt.
        refusals = [(address, reason) for address in addresses if (reason := _tcp_refusal(address))]
        if len(refusals) == len(addresses):
            raise NotReady(refusals[0][1] if len(refusals) == 1 else "no broker accepts a connection: " + "; ".join(
                f"{host}:{port} {reason}" for (host, port), reason in refusals))
        try:
            ensure_topics(bootstrap_servers, topics, timeout_s=10.0)
        except Exception as exc:  # aiokafka's errors share no base with asyncio's timeouts
            if transient(exc):
                raise NotReady(f"{type(exc).__name__}: {exc}") from exc
            raise StartupError(f"cannot start: {dependency}: {type(exc).__name__}: {exc}",
                               dependency=dependency) from exc

    startup.wait_for(dependency, check)


def open_migrated_store(startup: Startup, settings: Settings) -> Store:
    """The configured store, opened and migrated once it answers. The caller closes it."""
    dependency, address = store_dependency(settings)

    def check() -> Store:
        if address is not None and (reason := _tcp_refusal(address)):
            raise NotReady(reason)  # quietly: clickhouse-connect would log a warning per failed attempt
        try:
            store = open_store(settings)
        except StoreError as exc:
            raise _classified(exc, dependency) from exc
        try:
            migrate(store, cluster=settings.clickhouse_cluster)
        except StoreError as exc:
            store.close()  # a half-open embedded store would keep the directory locked
            raise _classified(exc, dependency) from exc
        return store

    return startup.wait_for(dependency, check)


def store_dependency(settings: Settings) -> tuple[str, tuple[str, int] | None]:
    """How start-up names the configured store (without credentials), and its host and port if it has one.

    Raises :class:`StartupError` at once for a store URL that cannot be right, so a caller
    can learn that before it waits for anything else.
    """
    if settings.clickhouse_url is not None:
        address = _http_address(settings.clickhouse_url.get_secret_value(), default_ports=(8123, 8443),
                                setting="SPENDSTREAM_CLICKHOUSE_URL", example="http://user:pass@host:8123/db")
        return f"ClickHouse at {address[0]}:{address[1]}", address
    if settings.store_url is not None:
        address = _http_address(settings.store_url, default_ports=(80, 443), setting="SPENDSTREAM_STORE_URL",
                                example="http://127.0.0.1:<port>")
        return f"the store host at {settings.store_url}", address
    return f"the embedded data directory {settings.data_dir}", None


def _http_address(url: str, *, default_ports: tuple[int, int], setting: str, example: str) -> tuple[str, int]:
    """Host and port of an http(s) URL (the default port for http, https)."""
    parts = urlsplit(url)
    try:
        port = parts.port or default_ports[parts.scheme == "https"]
    except ValueError:  # a port that is not a number
        port = None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        raise StartupError(f"cannot start: {setting} must look like {example}", dependency=setting)
    return parts.hostname, port


def _classified(exc: StoreError, dependency: str) -> Exception:
    """NotReady when ClickHouse did not answer, else the StartupError that ends start-up now."""
    # RemoteStore reports an unreachable store host as a StoreError caused by the transport failure.
    cause = exc.__cause__
    unreachable = isinstance(cause, (EndpointUnavailable, ConnectionError, TimeoutError)) or (
        isinstance(cause, urllib.error.URLError) and not isinstance(cause, urllib.error.HTTPError))
    if isinstance(exc, StoreUnavailable) or unreachable:
        return NotReady(str(exc))
    return StartupError(f"cannot start: {dependency}: {exc}", dependency=dependency)


def _addresses(bootstrap_servers: str, dependency: str) -> list[tuple[str, int]]:
    addresses = []
    for item in filter(None, (part.strip() for part in bootstrap_servers.split(","))):
        host, sep, port = item.rpartition(":")
        if not sep:
            host, port = item, "9092"  # Kafka's default, as aiokafka assumes
        if not host or not port.isdigit():
            raise StartupError(f"{dependency}: {item!r} is not host:port (SPENDSTREAM_KAFKA_BOOTSTRAP)",
                               dependency=dependency)
        addresses.append((host.strip("[]"), int(port)))
    if not addresses:
        raise StartupError(f"{dependency}: no host:port given (SPENDSTREAM_KAFKA_BOOTSTRAP)", dependency=dependency)
    return addresses


def _tcp_refusal(address: tuple[str, int], timeout_s: float = 2.0) -> str | None:
    """None if something accepts a TCP connection at ``address``, else why not ("connection refused")."""
    host, port = address
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except socket.gaierror as exc:  # a name not (yet) in DNS, as in a cluster before its service exists
        return f"cannot resolve {host} ({exc.strerror})"
    except TimeoutError:
        return f"no answer within {timeout_s:g} s"
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
    return None
