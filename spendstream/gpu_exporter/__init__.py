"""GPU exporter: reads a serving engine's metrics and emits GpuSample events.

Not built yet: see the GPU exporter issue. The contract it will emit is
:class:`spendstream.schemas.GpuSample`.
"""
