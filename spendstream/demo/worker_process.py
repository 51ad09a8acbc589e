"""A worker in a child process, as production runs it, for the demo and the tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from spendstream.localbroker import terminate
from spendstream.settings import Settings
from spendstream.sinks.endpoint import EndpointUnavailable, QueryClient, QueryFailed
from spendstream.sinks.loopback import SecretUnreadable, read_secret

if TYPE_CHECKING:
    from spendstream.sinks.host import RemoteStore


class WorkerFailed(RuntimeError):
    """The worker process exited or never became ready."""


class WorkerProcess:
    """Runs ``python -m spendstream worker`` with ``settings`` and the given broker.

    Its output goes to ``log_path``. ``start()`` returns once the worker has
    migrated the schema and answers queries; ``stop()`` sends SIGTERM (a clean
    faust shutdown, committing offsets) and waits.
    """

    def __init__(self, settings: Settings, *, bootstrap_servers: str, log_path: Path,
                 extra_env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.bootstrap_servers = bootstrap_servers
        self.log_path = log_path
        self.extra_env = extra_env or {}
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout_s: float = 90.0) -> None:
        env = dict(os.environ, **self.extra_env,
                   SPENDSTREAM_KAFKA_BOOTSTRAP=self.bootstrap_servers,
                   SPENDSTREAM_DATA_DIR=str(self.settings.data_dir),
                   SPENDSTREAM_USAGE_TOPIC=self.settings.usage_topic,
                   SPENDSTREAM_GPU_TOPIC=self.settings.gpu_topic,
                   SPENDSTREAM_LEDGER_TOPIC=self.settings.ledger_topic,
                   SPENDSTREAM_CONSUMER_GROUP=self.settings.consumer_group,
                   SPENDSTREAM_TOPIC_PARTITIONS=str(self.settings.topic_partitions),
                   SPENDSTREAM_BATCH_MAX_RECORDS=str(self.settings.batch_max_records),
                   SPENDSTREAM_BATCH_MAX_WAIT_S=str(self.settings.batch_max_wait_s))
        if self.settings.clickhouse_url is not None:
            env["SPENDSTREAM_CLICKHOUSE_URL"] = self.settings.clickhouse_url.get_secret_value()
        for name in ("overrides_file", "deployments_file", "store_url", "ops_address"):
            if getattr(self.settings, name) is not None:
                env[f"SPENDSTREAM_{name.upper()}"] = str(getattr(self.settings, name))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen([sys.executable, "-m", "spendstream", "worker"],
                                             stdout=log, stderr=subprocess.STDOUT, env=env)
        if self.settings.embedded:
            self._wait_for_queries(timeout_s)

    def query_client(self) -> QueryClient:
        """The worker's query endpoint, with write access: the harness is the data directory's owner."""
        client = QueryClient.for_data_dir(self.settings.data_dir, write=True)
        if client is None:
            raise WorkerFailed(self._failure("the worker is not serving queries"))
        return client

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown, no commit, no flush."""
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait()

    def stop(self, timeout_s: float = 30.0) -> int | None:
        process, self._process = self._process, None
        return None if process is None else terminate(process, timeout_s)

    def __enter__(self) -> WorkerProcess:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _wait_for_queries(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise WorkerFailed(self._failure(f"the worker exited with code {self._process.returncode}"))
            try:
                client = QueryClient.for_data_dir(self.settings.data_dir)
                if client is not None:
                    client.query_text("SELECT count() FROM usage_events", fmt="CSV")
                    return
            except (EndpointUnavailable, QueryFailed, SecretUnreadable):
                pass
            time.sleep(0.2)
        raise WorkerFailed(self._failure(f"the worker did not serve queries within {timeout_s:.0f}s"))

    def _failure(self, what: str) -> str:
        try:
            tail = self.log_path.read_text(errors="replace").splitlines()[-15:]
        except OSError:
            tail = []
        return what + (f"; last lines of {self.log_path}:\n  " + "\n  ".join(tail) if tail else "")


class StoreHostProcess:
    """``python -m spendstream store`` owning ``data_dir``, on a fixed loopback port (so it can come back there)."""

    def __init__(self, data_dir: Path, *, log_path: Path, port: int | None = None) -> None:
        from spendstream.localbroker import free_port

        self.data_dir = data_dir
        self.log_path = log_path
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDSTREAM_")}
        env |= {"SPENDSTREAM_DATA_DIR": str(self.data_dir), "SPENDSTREAM_WEB_PORT": str(self.port)}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen([sys.executable, "-m", "spendstream", "store"], stdout=log,
                                             stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise WorkerFailed(f"the store host exited with code {self._process.returncode}: "
                                   f"{self.log_path.read_text()[-2000:]}")
            try:
                self.query_client(timeout_s=2.0).query_text("SELECT 1", fmt="CSV")
                return
            except (EndpointUnavailable, QueryFailed, SecretUnreadable):  # the secret comes just before the port
                time.sleep(0.2)
        raise WorkerFailed(f"the store host did not answer within {timeout_s:.0f}s")

    def query_client(self, *, timeout_s: float = 60.0) -> QueryClient:
        """The host's query endpoint, with write access: the harness is the data directory's owner."""
        return QueryClient(self.url, read_secret(self.data_dir), timeout_s, write=True)

    def remote_store(self) -> RemoteStore:
        """The Store interface the host serves, as a worker started with SPENDSTREAM_STORE_URL sees it."""
        from spendstream.sinks.host import RemoteStore

        return RemoteStore(self.url, read_secret(self.data_dir))

    def stop(self, timeout_s: float = 30.0) -> int | None:
        process, self._process = self._process, None
        return None if process is None else terminate(process, timeout_s)

    def __enter__(self) -> StoreHostProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
