"""GPU exporter: reads a serving engine's metrics (and dcgm-exporter's, and NVML's) and emits GpuSample events.

:mod:`~.readings` knows which metric means what per engine, :mod:`~.dcgm` cuts
dcgm-exporter's node-wide numbers down to one deployment, :mod:`~.rates` turns
counters into deltas, :mod:`~.sample` keeps every valid field of a sample and
:mod:`~.exporter` runs the loop. The contract it emits is
:class:`spendstream.schemas.GpuSample`; see docs/gpu.md.
"""
