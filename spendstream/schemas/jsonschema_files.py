"""The JSON Schema files published beside the models, and how they are made."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from spendstream.schemas.alert import Alert
from spendstream.schemas.cost import CostRecord
from spendstream.schemas.gpu import GpuSample
from spendstream.schemas.ledger import LedgerEntry
from spendstream.schemas.usage import UsageEvent

SCHEMA_DIR = Path(__file__).with_name("jsonschema")
# usage_event.v1.json stays beside them as it was published: what version 1 senders validate against.
PUBLISHED: dict[str, type[BaseModel]] = {
    "usage_event.v2.json": UsageEvent,
    "gpu_sample.v1.json": GpuSample,
    "cost_record.v1.json": CostRecord,
    "alert.v1.json": Alert,
    "ledger_entry.v1.json": LedgerEntry,
}


def render(model: type[BaseModel]) -> str:
    """The schema text for ``model``, stable byte for byte."""
    schema = model.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_all(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in PUBLISHED.items():
        path = directory / name
        path.write_text(render(model), encoding="utf-8")
        written.append(path)
    return written
