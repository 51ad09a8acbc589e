"""The contracts between emitters and the pipeline, versioned.

Also published as JSON Schema files (``spendstream/schemas/jsonschema/``) so
services in other languages can emit; ``python -m spendstream.schemas`` rewrites them.
"""

from spendstream.schemas.alert import Alert
from spendstream.schemas.cost import CostRecord
from spendstream.schemas.gpu import GpuSample
from spendstream.schemas.ledger import LedgerEntry
from spendstream.schemas.usage import UsageEvent

__all__ = ["Alert", "CostRecord", "GpuSample", "LedgerEntry", "UsageEvent"]
