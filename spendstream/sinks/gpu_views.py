"""GPU cost tables and views of the GPU exporter II migration (one migration, appended last).

Migration 4 made ``gpu_samples``, ``gpu_deployments`` and the first views; this
module holds what came with the exporter's second round, so migrations.py lists
it in one line.
"""

from __future__ import annotations

# New GpuSample fields: the columns derive from the contract (tests/test_one_shape.py checks).
SAMPLE_COLUMNS = (
    "ALTER TABLE gpu_samples ADD COLUMN IF NOT EXISTS kv_cache_utilization_max Nullable(Float64) "
    "COMMENT 'the fullest engine''s KV cache use (kv_cache_utilization is the mean)' AFTER kv_cache_utilization",
    "ALTER TABLE gpu_samples ADD COLUMN IF NOT EXISTS prompt_tokens_cached_delta Nullable(UInt64) "
    "COMMENT 'of prompt_tokens_delta, served from a prefix cache: not computed' AFTER prompt_tokens_delta",
    "ALTER TABLE gpu_samples ADD COLUMN IF NOT EXISTS dropped_readings Nullable(UInt32) "
    "COMMENT 'readings the exporter dropped from this sample as out of range' AFTER gpu_power_w",
)

STATEMENTS: tuple[str, ...] = (*SAMPLE_COLUMNS,)
