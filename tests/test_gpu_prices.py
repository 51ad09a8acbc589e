"""Effective-dated GPU prices: a price change does not rewrite the past; gpu-reprice corrects it, on the record.

Real chdb (the shared embedded store), samples stored as the worker stores them,
the deployments file as an operator writes it.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import ROUND_DOWN, Decimal

from spendstream.pricing.deployments import load_deployments
from spendstream.schemas.gpu import GpuSample
from spendstream.sinks.gpu_prices import reprice_gpu, sync_prices
from spendstream.sinks.rows import deployment_table, gpu_sample_table

JUNE = datetime(2026, 6, 30, 23, 59, tzinfo=timezone.utc)


def usd(gpus: int, per_gpu_hour: str, *, minutes: int = 1) -> Decimal:
    """What ``gpus`` GPUs cost for ``minutes`` at ``per_gpu_hour``, as the store's Decimal(38, 18) holds it."""
    return (gpus * Decimal(per_gpu_hour) * minutes / 60).quantize(Decimal("1e-18"), rounding=ROUND_DOWN)


def _file(tmp_path, name: str, prices: str) -> dict:
    path = tmp_path / f"{uuid.uuid4().hex}.yaml"
    path.write_text(f"deployments:\n  - name: {name}\n    gpu_type: L4\n    gpu_count: 2\n{prices}")
    return load_deployments(path)


def _store(store, deployments: dict, now: datetime) -> list[str]:
    store.insert_arrow("gpu_deployments", deployment_table(list(deployments.values()), now=now))
    return sync_prices(store, deployments, now=now)


def _minute_costs(store, name: str) -> dict[int, Decimal]:
    """GPU cost by minute (epoch seconds)."""
    rows = store.query_arrow("SELECT toUnixTimestamp(minute) AS minute, gpu_cost_usd FROM gpu_minutely "
                             "WHERE deployment = {d:String} ORDER BY minute", {"d": name}).to_pylist()
    return {r["minute"]: r["gpu_cost_usd"] for r in rows}


def _samples(store, name: str) -> None:
    # one 60 s sample ending at 23:59:30 on June 30 and one at 00:00:30 on July 1
    samples = [GpuSample(ts=JUNE + timedelta(seconds=30), interval_s=60, deployment=name, prompt_tokens_delta=600),
               GpuSample(ts=JUNE + timedelta(minutes=1, seconds=30), interval_s=60, deployment=name,
                         prompt_tokens_delta=600)]
    store.insert_arrow("gpu_samples", gpu_sample_table(samples))


DATED = """\
    prices:
      - effective_from: 2026-01-01
        usd_per_gpu_hour: 0.80
      - effective_from: 2026-07-01
        usd_per_gpu_hour: 0.50
        gpu_count: 4
        pricing: reserved
"""


def test_each_sample_is_priced_at_the_period_in_force_at_its_time(embedded_store, tmp_path) -> None:
    name = f"qwen-{uuid.uuid4().hex[:8]}"
    _store(embedded_store, _file(tmp_path, name, DATED), JUNE)
    _samples(embedded_store, name)
    costs = list(_minute_costs(embedded_store, name).values())
    assert costs == [usd(2, "0.80"), usd(4, "0.50")]  # 1 min at each


def test_a_new_price_period_does_not_rewrite_the_past(embedded_store, tmp_path) -> None:
    name = f"qwen-{uuid.uuid4().hex[:8]}"
    _store(embedded_store, _file(tmp_path, name, "    usd_per_gpu_hour: 0.80\n"), JUNE - timedelta(days=30))
    _samples(embedded_store, name)
    before = _minute_costs(embedded_store, name)
    # the operator edits the undated price on July 1 and restarts the worker
    edited = _file(tmp_path, name, "    usd_per_gpu_hour: 0.40\n")
    assert _store(embedded_store, edited, JUNE + timedelta(hours=1)) == []
    assert _minute_costs(embedded_store, name) == before  # samples before the change keep their price
    later = GpuSample(ts=JUNE + timedelta(hours=2), interval_s=60, deployment=name, prompt_tokens_delta=1)
    embedded_store.insert_arrow("gpu_samples", gpu_sample_table([later]))
    costs = _minute_costs(embedded_store, name)
    assert costs[int((JUNE + timedelta(hours=2)).timestamp())] == usd(2, "0.40")


def test_a_changed_past_price_waits_for_gpu_reprice_which_records_the_correction(embedded_store, tmp_path) -> None:
    name = f"qwen-{uuid.uuid4().hex[:8]}"
    _store(embedded_store, _file(tmp_path, name, DATED), JUNE)
    _samples(embedded_store, name)
    before = _minute_costs(embedded_store, name)
    corrected = _file(tmp_path, name, DATED.replace("0.80", "0.74"))  # the January price was wrong
    unapplied = _store(embedded_store, corrected, JUNE + timedelta(days=1))
    assert len(unapplied) == 1 and "gpu-reprice" in unapplied[0]
    assert _minute_costs(embedded_store, name) == before

    summary = reprice_gpu(embedded_store, corrected, [name], now=JUNE + timedelta(days=2))
    assert summary.days_changed == 1  # June 30; July 1 is priced by the unchanged July period
    assert summary.delta == usd(2, "0.74") - usd(2, "0.80")
    rows = embedded_store.query_arrow("SELECT day, old_cost_usd, new_cost_usd FROM gpu_cost_corrections "
                                      "WHERE reprice_id = {r:String}", {"r": summary.reprice_id}).to_pylist()
    assert [(str(r["day"]), r["old_cost_usd"], r["new_cost_usd"]) for r in rows] == [
        ("2026-06-30", before[int(JUNE.timestamp())], usd(2, "0.74"))]
    again = reprice_gpu(embedded_store, corrected, [name], now=JUNE + timedelta(days=3))
    assert again.days_changed == 0  # idempotent


def test_a_deployment_has_one_price_or_dated_prices_not_both(tmp_path) -> None:
    import pytest

    from spendstream.configfile import ConfigFileError

    with pytest.raises(ConfigFileError, match="exactly one of usd_per_gpu_hour or prices"):
        _file(tmp_path, "x", "    usd_per_gpu_hour: 1\n" + DATED)
    with pytest.raises(ConfigFileError, match="same effective_from"):
        _file(tmp_path, "x", DATED.replace("2026-07-01", "2026-01-01"))
    assert _file(tmp_path, "x", DATED)["x"].price_at(JUNE).usd_per_gpu_hour == Decimal("0.80")
    assert _file(tmp_path, "x", DATED)["x"].price_at(datetime(2025, 1, 1, tzinfo=timezone.utc)) is None


SEED = """
import sys
from datetime import datetime, timedelta, timezone
from spendstream.pricing.deployments import load_deployments
from spendstream.schemas.gpu import GpuSample
from spendstream.sinks.embedded import EmbeddedStore
from spendstream.sinks.gpu_prices import sync_prices
from spendstream.sinks.migrations import migrate
from spendstream.sinks.rows import deployment_table, gpu_sample_table

store = EmbeddedStore(sys.argv[1])
migrate(store)
deployments = load_deployments(sys.argv[2])
store.insert_arrow("gpu_deployments", deployment_table(list(deployments.values())))
sync_prices(store, deployments)
at = datetime(2026, 6, 30, 12, tzinfo=timezone.utc)
store.insert_arrow("gpu_samples", gpu_sample_table([GpuSample(ts=at, interval_s=60, deployment="qwen")]))
store.close()
"""


def test_gpu_reprice_command_applies_the_file_and_says_what_changed(tmp_path) -> None:
    import os
    import subprocess
    import sys

    data, before, after = tmp_path / "data", tmp_path / "before.yaml", tmp_path / "after.yaml"
    before.write_text("deployments:\n  - name: qwen\n    gpu_type: L4\n    gpu_count: 2\n" + DATED)
    after.write_text(before.read_text().replace("0.80", "0.74"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDSTREAM_")}
    env["SPENDSTREAM_DATA_DIR"] = str(data)
    subprocess.run([sys.executable, "-c", SEED, str(data), str(before)], env=env, check=True, timeout=120)

    def cli(*args: str, deployments=after) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "spendstream", *args], capture_output=True, text=True,
                              env=env | {"SPENDSTREAM_DEPLOYMENTS_FILE": str(deployments)}, timeout=120)

    result = cli("gpu-reprice")
    assert result.returncode == 0, result.stderr
    assert "1 day(s) changed" in result.stdout
    assert f"difference   ${usd(2, '0.74') - usd(2, '0.80'):+,.6f}" in result.stdout
    assert "gpu_cost_corrections WHERE reprice_id" in result.stdout
    unknown = cli("gpu-reprice", "--deployment", "nope")
    assert unknown.returncode == 2 and "not in the deployments file: nope" in unknown.stderr
