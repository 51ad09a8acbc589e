"""The deployment artefacts: the compose file validates, Grafana's provisioning and dashboard work on our SQL."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import jsonschema
import pytest
import yaml

from spendstream.pricing import load_overrides
from spendstream.pricing.deployments import load_deployments

ROOT = Path(__file__).parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DASHBOARD = json.loads((ROOT / "deploy/grafana/dashboards/spendstream.json").read_text())


def _compose_validator() -> jsonschema.Draft201909Validator:
    schema = json.loads((Path(__file__).parent / "fixtures" / "compose_spec.json").read_text())
    return jsonschema.Draft201909Validator(schema)


def test_compose_file_validates_against_the_compose_spec() -> None:
    _compose_validator().validate(COMPOSE)


def test_the_schema_check_catches_a_broken_file() -> None:
    broken = json.loads(json.dumps(COMPOSE))
    broken["services"]["worker"]["depends_on"]["kafka"]["condition"] = "whenever"
    broken["services"]["worker"]["restart_policy"] = "always"
    assert len(list(_compose_validator().iter_errors(broken))) >= 2


@pytest.mark.skipif(shutil.which("docker") is None or subprocess.run(
    ["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="the docker compose plugin is not installed here; the schema test above validates the file")
def test_docker_compose_config_accepts_the_file() -> None:
    result = subprocess.run(["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_stack_has_what_production_needs() -> None:
    services = COMPOSE["services"]
    assert {"kafka", "clickhouse", "worker", "grafana", "gpu-exporter"} <= services.keys()
    for name in ("kafka", "clickhouse", "worker", "grafana"):
        assert "healthcheck" in services[name], name
    assert services["gpu-exporter"]["profiles"] == ["gpu"]
    assert "replicas" not in services["worker"].get("deploy", {}) and "container_name" not in services["worker"]
    assert "SPENDSTREAM_CLICKHOUSE_URL" in services["worker"]["environment"]
    assert {"kafka-data", "clickhouse-data", "grafana-data"} <= COMPOSE["volumes"].keys()
    assert "grafana-clickhouse-datasource" in services["grafana"]["environment"]["GF_INSTALL_PLUGINS"]


def test_grafana_provisions_the_clickhouse_plugin_and_the_dashboard() -> None:
    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/clickhouse.yaml").read_text())
    (source,) = datasource["datasources"]
    assert source["type"] == "grafana-clickhouse-datasource" and source["uid"] == "spendstream-clickhouse"
    assert "password" in source["secureJsonData"] and "password" not in source["jsonData"]
    for panel in DASHBOARD["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]


def grafana_macros(sql: str, *, from_s: int, to_s: int, interval_s: int) -> str:
    """``sql`` with the ClickHouse plugin's macros expanded as the plugin expands them (epoch seconds)."""
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 >= toDateTime({from_s}) AND \1 <= toDateTime({to_s})", sql)
    sql = sql.replace("$__fromTime", f"toDateTime({from_s})").replace("$__toTime", f"toDateTime({to_s})")
    return re.sub(r"\$__timeInterval\((\w+)\)", rf"toStartOfInterval(toDateTime(\1), INTERVAL {interval_s} second)",
                  sql)


def _grafana_macros(sql: str) -> str:
    """The last 30 days in hours."""
    now = int(time.time())
    return grafana_macros(sql, from_s=now - 30 * 86_400, to_s=now, interval_s=3600)


@pytest.mark.integration
@pytest.mark.parametrize("panel", DASHBOARD["panels"], ids=[p["title"] for p in DASHBOARD["panels"]])
def test_every_dashboard_panel_query_runs(seeded_store, panel) -> None:
    result = seeded_store.query(_grafana_macros(panel["targets"][0]["rawSql"]))
    assert result.columns and result.rows, panel["title"]


def test_example_config_files_are_valid() -> None:
    assert load_overrides(ROOT / "deploy/config/overrides.example.yaml").rules
    assert load_deployments(ROOT / "deploy/config/deployments.example.yaml")
