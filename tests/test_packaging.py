"""The emitter stays light: embedding it must not pull in the pipeline."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import requires

from packaging.requirements import Requirement

HEAVY = {"faust-streaming", "chdb", "numpy", "clickhouse-connect", "pyarrow", "genai-prices", "pandas"}


def test_core_install_requires_none_of_the_pipeline() -> None:
    core = [Requirement(r) for r in requires("spendstream") or [] if "extra ==" not in r]
    assert {r.name for r in core} == {"pydantic", "aiokafka"}
    assert not {r.name for r in core} & HEAVY


def test_importing_the_emitter_loads_no_pipeline_module() -> None:
    code = ("import sys, spendstream.emitter, spendstream.schemas; "
            "print(sorted(m for m in ('faust', 'chdb', 'numpy', 'clickhouse_connect', 'pyarrow', 'genai_prices') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
