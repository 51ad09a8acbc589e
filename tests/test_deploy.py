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
from spendstream.settings import ops_address

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


def test_kafka_keeps_its_log_on_its_volume() -> None:
    kafka = COMPOSE["services"]["kafka"]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in kafka["volumes"]}
    assert mounts[kafka["environment"]["KAFKA_LOG_DIRS"]] == "kafka-data"


def test_the_grafana_plugin_is_pinned_to_the_version_the_dashboard_is_written_for() -> None:
    plugin, version = COMPOSE["services"]["grafana"]["environment"]["GF_INSTALL_PLUGINS"].split()
    assert plugin == "grafana-clickhouse-datasource" and re.fullmatch(r"4\.\d+\.\d+", version)
    assert {panel["targets"][0]["pluginVersion"] for panel in DASHBOARD["panels"]} == {version}


def test_the_worker_health_check_asks_its_readiness_endpoint() -> None:
    worker = COMPOSE["services"]["worker"]
    host, port = ops_address(worker["environment"]["SPENDSTREAM_OPS_ADDRESS"])
    assert host == "0.0.0.0"  # the health check runs in the container; probes may come from outside it
    assert any(f"http://127.0.0.1:{port}/readyz" in part for part in worker["healthcheck"]["test"])
    assert "start_period" in worker["healthcheck"]


# grafana-clickhouse-datasource v4: `format` 0 is a time series and 1 a table (grafana/sqlds's FormatQueryOption),
# and `queryType` is the v4 name of the same choice ("sql" and "builder" were v3's; the plugin migrates those).
PANEL_FORMATS = {"timeseries": (0, "timeseries"), "table": (1, "table"), "barchart": (1, "table"),
                 "piechart": (1, "table")}
VARIABLES = ("team", "feature", "customer", "environment")


@pytest.mark.parametrize("panel", DASHBOARD["panels"], ids=[p["title"] for p in DASHBOARD["panels"]])
def test_each_panel_asks_the_plugin_for_the_shape_its_type_draws(panel) -> None:
    (target,) = panel["targets"]
    assert (target["format"], target["queryType"]) == PANEL_FORMATS[panel["type"]]
    assert target["editorType"] == "sql"


def test_the_dashboard_has_team_feature_customer_and_environment_variables() -> None:
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert set(VARIABLES) <= variables.keys()
    for name in VARIABLES:
        variable = variables[name]
        assert variable["type"] == "query" and variable["multi"] and variable["includeAll"], name
        assert variable["datasource"]["uid"] == "spendstream-clickhouse", name
        # a custom All value is inserted unformatted: it must be quoted already, as a filter compares it
        assert variable["allValue"] == "'__all__'", name


def test_grafana_provisions_the_clickhouse_plugin_and_the_dashboard() -> None:
    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/clickhouse.yaml").read_text())
    (source,) = datasource["datasources"]
    assert source["type"] == "grafana-clickhouse-datasource" and source["uid"] == "spendstream-clickhouse"
    assert "password" in source["secureJsonData"] and "password" not in source["jsonData"]
    for panel in DASHBOARD["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]


def grafana_macros(sql: str, *, from_s: int, to_s: int, interval_s: int,
                   variables: dict[str, list[str] | None] | None = None) -> str:
    """``sql`` with the ClickHouse plugin's macros expanded as the plugin expands them (epoch seconds), and
    Grafana's ``${name:singlequote}`` as Grafana does: None is All (the variable's custom all value)."""
    values = {name: None for name in VARIABLES} | (variables or {})
    variable = {v["name"]: v for v in DASHBOARD["templating"]["list"]}

    def substitute(match: re.Match[str]) -> str:
        chosen = values[match[1]]
        if chosen is None:
            return variable[match[1]]["allValue"]
        return ",".join("'" + value.replace("'", "\\'") + "'" for value in chosen)  # Grafana's singlequote

    sql = re.sub(r"\$\{(\w+):singlequote\}", substitute, sql)
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 >= toDateTime({from_s}) AND \1 <= toDateTime({to_s})", sql)
    sql = sql.replace("$__fromTime", f"toDateTime({from_s})").replace("$__toTime", f"toDateTime({to_s})")
    return re.sub(r"\$__timeInterval\((\w+)\)", rf"toStartOfInterval(toDateTime(\1), INTERVAL {interval_s} second)",
                  sql)


def _grafana_macros(sql: str, variables: dict[str, list[str] | None] | None = None) -> str:
    """The last 30 days in hours; every variable at All unless given."""
    now = int(time.time())
    return grafana_macros(sql, from_s=now - 30 * 86_400, to_s=now, interval_s=3600, variables=variables)


@pytest.mark.integration
@pytest.mark.parametrize("panel", DASHBOARD["panels"], ids=[p["title"] for p in DASHBOARD["panels"]])
def test_every_dashboard_panel_query_runs(seeded_store, panel) -> None:
    result = seeded_store.query(_grafana_macros(panel["targets"][0]["rawSql"]))
    assert result.columns and result.rows, panel["title"]


@pytest.mark.integration
@pytest.mark.parametrize("name", VARIABLES)
def test_every_variable_query_runs_and_offers_the_seeded_values(seeded_store, name) -> None:
    (variable,) = [v for v in DASHBOARD["templating"]["list"] if v["name"] == name]
    values = {row[0] for row in seeded_store.query(_grafana_macros(variable["query"])).rows}
    assert values and len(values) == len(seeded_store.query(_grafana_macros(variable["query"])).rows)
    if name == "team":
        assert "search" in values


def _source_columns(store, sql: str) -> set[str]:
    source, parameterized = re.search(r"\bFROM\s+(\w+)\s*(\(?)", sql).groups()
    if parameterized:  # usage_hourly(since = …, until = …) and the like (and the selections it takes, at All)
        selections = "".join(f", {name}s = ['__all__']" for name in VARIABLES if f"{name}s = [$" in sql)
        return {row[0] for row in store.query(
            f"DESCRIBE (SELECT * FROM {source}(since = now(), until = now(){selections}))").rows}
    return {row[0] for row in store.query(f"DESCRIBE TABLE {source}").rows}


@pytest.mark.integration
@pytest.mark.parametrize("panel", DASHBOARD["panels"], ids=[p["title"] for p in DASHBOARD["panels"]])
def test_every_panel_that_can_be_filtered_by_a_variable_is(seeded_store, panel) -> None:
    sql = panel["targets"][0]["rawSql"]
    columns = _source_columns(seeded_store, sql)
    for name in VARIABLES:
        if name not in columns and f"{name}s = [${{{name}:singlequote}}]" not in sql:  # a column, or a view parameter
            assert f"${{{name}:" not in sql, (panel["title"], name)
            continue
        assert f"${{{name}:singlequote}}" in sql, (panel["title"], name)
        # a value nobody has leaves the panel empty; a value someone has keeps rows (team=search is seeded)
        assert seeded_store.query(_grafana_macros(sql, {name: ["no-such-value", "it's quoted"]})).rows == [], \
            (panel["title"], name)
    if "team" in columns:
        assert seeded_store.query(_grafana_macros(sql, {"team": ["search", "(none)"]})).rows, panel["title"]


def test_example_config_files_are_valid() -> None:
    assert load_overrides(ROOT / "deploy/config/overrides.example.yaml").rules
    assert load_deployments(ROOT / "deploy/config/deployments.example.yaml")
