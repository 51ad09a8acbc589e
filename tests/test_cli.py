"""The CLI as a person uses it: `spendstream sql` answers while `spendstream up` runs."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spendstream.sinks.endpoint import QueryClient

pytestmark = pytest.mark.integration


def _cli(*args: str, env: dict[str, str], timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "spendstream", *args], env=env, capture_output=True, text=True,
                          timeout=timeout_s)


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDSTREAM_")}
    env["SPENDSTREAM_DATA_DIR"] = str(data_dir)
    return env


def test_sql_answers_while_up_is_running(tmp_path) -> None:
    env = _env(tmp_path / "data")
    up = subprocess.Popen([sys.executable, "-m", "spendstream", "up"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while QueryClient.for_data_dir(tmp_path / "data") is None:
            assert up.poll() is None, up.stdout.read() if up.stdout else ""
            assert time.monotonic() < deadline, "spendstream up never served queries"
            time.sleep(0.2)
        broker_pid = None
        for _ in range(100):
            result = _cli("sql", "SELECT count() AS n, {x:String} AS bound FROM usage_events",
                          "--format", "JSONEachRow", "--param", "x=it's bound", env=env)
            if result.returncode == 0:
                break
            time.sleep(0.3)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"n": 0, "bound": "it's bound"}

        bad = _cli("sql", "SELECT * FROM no_such_table", env=env)
        assert bad.returncode == 1 and "no_such_table" in bad.stderr
        refused = _cli("sql", "CREATE TABLE scratch (a Int8) ENGINE = Memory", env=env)
        assert refused.returncode == 1 and "read-only" in refused.stderr and "--write" in refused.stderr
        allowed = _cli("sql", "CREATE TABLE scratch (a Int8) ENGINE = Memory", "--write", env=env)
        assert allowed.returncode == 0, allowed.stderr
        several = _cli("sql", "SELECT 1; CREATE TABLE sneaky (a Int8) ENGINE = Memory", "--write", env=env)
        assert several.returncode == 1 and "one statement at a time" in several.stderr
        outside = _cli("sql", "SELECT * FROM file('/etc/passwd', 'LineAsString')", env=env)
        assert outside.returncode == 1 and "read-only" in outside.stderr
        secret = tmp_path / "data" / "worker.secret"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        secret.chmod(0o644)  # as if others could have read it: no longer used
        exposed = _cli("sql", "SELECT 1", env=env)
        assert exposed.returncode == 1 and "mode 0600" in exposed.stderr
        secret.chmod(0o600)
        assert _cli("sql", "EXISTS TABLE sneaky", "--format", "CSV", env=env).stdout == "0\n"
        # the commands that only read ask the worker too, and say when there is nothing
        exported = _cli("export", "focus", "--since", "1d", "--out", str(tmp_path / "focus.csv"), env=env)
        assert exported.returncode == 0 and "no priced usage" in exported.stdout, exported.stderr
        dry = _cli("reprice", "--since", "1d", "--dry-run", env=env)
        assert dry.returncode == 0 and "nothing to re-price" in dry.stdout, dry.stderr
        broker_pid = _child_tansu_pid(up.pid)
        assert broker_pid is not None
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(60)
    assert up.returncode == 0
    output = up.stdout.read() if up.stdout else ""
    assert "keeps records in memory only" in output and "SPENDSTREAM_KAFKA_BOOTSTRAP" in output
    assert not (tmp_path / "data" / "worker.json").exists()
    assert broker_pid is not None and not _alive(broker_pid), "the local broker outlived `spendstream up`"

    # With no worker running, `spendstream sql` opens the directory itself.
    result = _cli("sql", "SELECT count() FROM usage_events", "--format", "CSV", env=env)
    assert (result.returncode, result.stdout.strip()) == (0, "0")


def test_worker_without_a_broker_setting_says_what_to_do(tmp_path) -> None:
    result = _cli("worker", env=_env(tmp_path))
    assert result.returncode == 2 and "SPENDSTREAM_KAFKA_BOOTSTRAP" in result.stderr


def _child_tansu_pid(parent: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"tansu" in cmdline:
            return int(entry.name)
    return None


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


_SEED_EVENTS = """
import orjson, sys
from spendstream.batches import SourceRecord
from spendstream.agents.stages import process
from spendstream.pricing import Pricer
from spendstream.sinks.embedded import EmbeddedStore
from spendstream.sinks.migrations import migrate
from spendstream.sinks.rows import usage_table
store = EmbeddedStore(sys.argv[1])
migrate(store)
events = [{"event_id": f"cli-{i}", "ts": "2025-06-01T10:00:00Z", "provider": "openai", "model": "gpt-4o",
           "customer": "acme" if i % 2 else "globex", "input_tokens": 1_000_000, "output_tokens": 0}
          for i in range(4)]
store.insert_arrow("usage_events", usage_table(process([SourceRecord("u", 0, 0, orjson.dumps(events))], Pricer())))
store.close()
"""


def test_reprice_export_and_prices_commands(tmp_path) -> None:
    data = tmp_path / "data"
    env = _env(data)
    subprocess.run([sys.executable, "-c", _SEED_EVENTS, str(data)], env=env, check=True, timeout=60)
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text("overrides:\n  - {id: acme, provider: openai, model: gpt-4o, customer: acme, "
                         "effective_from: 2025-01-01, discount_percent: 10}\n")
    env["SPENDSTREAM_OVERRIDES_FILE"] = str(overrides)

    shown = _cli("prices", "show", "gpt-4o", "--at", "2025-06-01", "--customer", "acme", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "override:acme" in shown.stdout and "2.25   (2.5)" in shown.stdout

    repriced = _cli("reprice", "--since", "2025-06-01", "--until", "2025-06-02", env=env)
    assert repriced.returncode == 0, repriced.stderr
    # 4 events at $2.50 each; the 2 acme events now 10 % off
    assert "changed 2" in repriced.stdout and "$10.000000" in repriced.stdout and "$9.500000" in repriced.stdout

    out = tmp_path / "focus.csv"
    exported = _cli("export", "focus", "--since", "2025-06-01", "--until", "2025-06-02", "--out", str(out), env=env)
    assert exported.returncode == 0, exported.stderr
    assert "EffectiveCost $9.500000" in exported.stdout and out.read_text().startswith("\"BilledCost\"")

    backwards = _cli("reprice", "--since", "2025-06-02", "--until", "2025-06-01", env=env)
    assert backwards.returncode == 2 and "must be after --since" in backwards.stderr
    overrides.write_text("overrides:\n  - {id: x, model: m, effective_from: 2025-01-01}\n")
    broken = _cli("prices", "show", "gpt-4o", env=env)
    assert broken.returncode == 2 and f"{overrides}:2: overrides.0: Value error, give exactly one" in broken.stderr


def test_sql_on_the_directory_itself_runs_one_statement_read_only(tmp_path, http_server) -> None:
    data = tmp_path / "data"
    env = _env(data)
    subprocess.run([sys.executable, "-c", _SEED_EVENTS, str(data)], env=env, check=True, timeout=60)
    total = "SELECT sum(total_cost) FROM usage_events FINAL"
    assert _cli("sql", total, "--format", "CSV", env=env).stdout == "10\n"  # 4 events at $2.50

    for write in ((), ("--write",)):
        several = _cli("sql", "SELECT 1; ALTER TABLE usage_events UPDATE total_cost = 0 WHERE 1 "
                       "SETTINGS mutations_sync = 1", *write, env=env)
        assert several.returncode == 1 and "one statement at a time" in several.stderr and not several.stdout
    port, hits = http_server
    for sql in ("ALTER TABLE usage_events UPDATE total_cost = 0 WHERE 1",
                f"SELECT * FROM url('http://127.0.0.1:{port}/', 'LineAsString')",
                "SELECT file('/etc/passwd')"):
        refused = _cli("sql", sql, env=env)
        assert refused.returncode == 1 and "read-only" in refused.stderr and "--write" in refused.stderr
    assert hits == []
    assert _cli("sql", total, "--format", "CSV", env=env).stdout == "10\n"


def test_help_lists_every_command_and_the_variables_each_long_running_one_reads() -> None:
    from spendstream.cli import build_parser
    from spendstream.settings import COMMAND_SETTINGS, KafkaSettings, Settings

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    described = {action.dest: action.help for action in commands._choices_actions}
    assert set(described) == set(commands.choices), "a command without help= is missing from the top-level help"
    top = parser.format_help()
    for name, text in described.items():
        assert re.search(rf"^\s+{re.escape(name)}\s", top, re.M) and text.split()[0] in top, name
    assert "export focus" in top and "prices show" in top and "dead-letters replay" in top

    for name, groups in COMMAND_SETTINGS.items():
        text = commands.choices[name].format_help()
        for group in (*groups, Settings):
            for field in group.model_fields if group is not Settings else ("log_level",):
                assert f"SPENDSTREAM_{field.upper()}\n" in text, (name, field)
    store_help = commands.choices["store"].format_help()
    assert "SPENDSTREAM_DATA_DIR" in store_help and "Where embedded chdb keeps its data" in store_help
    assert not any(f"SPENDSTREAM_{f.upper()}" in store_help for f in KafkaSettings.model_fields)
    # every setting belongs to a group (so some command's help lists it), log_level to all
    grouped = {f for base in Settings.__bases__ for f in base.model_fields}
    assert set(Settings.model_fields) - grouped == {"log_level"}, "put new settings in a group of settings.py"


def test_prices_show_takes_the_provider_from_the_model_name(capsys, monkeypatch) -> None:
    from spendstream.cli import main

    for name in [k for k in os.environ if k.startswith("SPENDSTREAM_")]:
        monkeypatch.delenv(name)
    assert main(["prices", "show", "claude-3-5-sonnet-20241022", "--at", "2025-06-01"]) == 0
    shown = capsys.readouterr().out
    assert "(anthropic)" in shown and "anthropic/claude-3-5-sonnet" in shown and "input           3" in shown
    assert main(["prices", "show", "gemini-1.5-pro", "--at", "2025-06-01"]) == 0
    assert "google/gemini-1.5-pro" in capsys.readouterr().out
    assert main(["prices", "show", "azure/gpt-4o", "--at", "2025-06-01"]) == 0  # a gateway prefix still decides
    assert "azure/gpt-4o" in capsys.readouterr().out
    # hosted by Vertex AI and Bedrock alike: said, not guessed
    assert main(["prices", "show", "anthropic.claude-3-5-sonnet-20241022-v2:0"]) == 2
    assert "several providers (aws, google): pass --provider" in capsys.readouterr().err
    assert main(["prices", "show", "acme-llama-9"]) == 2
    assert "no provider in the catalog has a model 'acme-llama-9': pass --provider" in capsys.readouterr().err


def test_export_and_reprice_dry_run_ask_the_store_owner_and_empty_results_say_so(tmp_path) -> None:
    data = tmp_path / "data"
    env = _env(data)
    subprocess.run([sys.executable, "-c", _SEED_EVENTS, str(data)], env=env, check=True, timeout=60)
    host = subprocess.Popen([sys.executable, "-m", "spendstream", "store"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while QueryClient.for_data_dir(data) is None:
            assert host.poll() is None, host.stdout.read() if host.stdout else ""
            assert time.monotonic() < deadline, "spendstream store never served queries"
            time.sleep(0.2)
        day = ("--since", "2025-06-01", "--until", "2025-06-02")
        out = tmp_path / "focus.csv"
        exported = _cli("export", "focus", *day, "--out", str(out), env=env)
        assert exported.returncode == 0, exported.stderr
        assert "wrote 2 FOCUS rows" in exported.stdout and "EffectiveCost $10.000000" in exported.stdout
        assert "unassigned:<provider> for openai" in exported.stdout and "SPENDSTREAM_FOCUS_BILLING_ACCOUNTS" in \
            exported.stdout
        overrides = tmp_path / "overrides.yaml"
        overrides.write_text("overrides:\n  - {id: acme, provider: openai, model: gpt-4o, customer: acme, "
                             "effective_from: 2025-01-01, discount_percent: 10}\n")
        env["SPENDSTREAM_OVERRIDES_FILE"] = str(overrides)
        dry = _cli("reprice", *day, "--dry-run", env=env)
        assert dry.returncode == 0, dry.stderr
        assert "would change 2" in dry.stdout and "$9.500000" in dry.stdout
        writing = _cli("reprice", *day, env=env)  # writes: not through another process
        assert writing.returncode == 2 and "stop the worker first, or look with --dry-run" in writing.stderr

        empty = ("--since", "2024-01-01", "--until", "2024-01-02")
        nothing = _cli("export", "focus", *empty, "--out", str(tmp_path / "empty.csv"), env=env)
        assert nothing.returncode == 0 and "no priced usage from 2024-01-01 00:00" in nothing.stdout
        assert _cli("reprice", *empty, "--dry-run", env=env).stdout.endswith("nothing to re-price\n")
        assert "no events emitted, stored or dead-lettered" in _cli("reconcile", *empty, env=env).stdout
        no_rows = _cli("sql", "SELECT * FROM usage_events WHERE ts < '2024-01-01'", env=env)
        assert (no_rows.returncode, no_rows.stdout, no_rows.stderr) == (0, "", "(no rows)\n")
        no_letters = _cli("dead-letters", "replay", "--dry-run", env=env)
        assert no_letters.stdout.startswith("no dead letters received since"), no_letters
    finally:
        host.send_signal(signal.SIGINT)
        host.wait(60)
    stored = _cli("sql", "SELECT sum(total_cost) FROM usage_events FINAL", "--format", "CSV", env=env)
    assert stored.stdout == "10\n"  # the dry run wrote nothing
