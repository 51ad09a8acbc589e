"""dcgm-exporter's ``DCGM_FI_*`` numbers, cut down to one deployment.

dcgm-exporter reports every GPU of the node, whoever uses it: summed as they
come, another pod's memory and power are charged to this deployment. A
:class:`DcgmFilter` keeps the series of the deployment's pods (the ``pod``,
``namespace`` and ``container`` labels dcgm-exporter adds on Kubernetes) or of
its GPUs (``UUID``); without one the numbers stay node-wide, and the exporter
says so once.

Under MIG, dcgm-exporter publishes one series per GPU instance (``GPU_I_ID``).
Framebuffer use is the instance's own and is summed; power is the whole
device's, repeated on each instance, so it counts once per physical GPU.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

Labels = dict[str, str]
UUID_LABELS = ("UUID", "uuid", "gpu_uuid")  # dcgm-exporter's UUID label name is configurable


def gpu_of(labels: Labels) -> str | None:
    """The physical GPU a series belongs to: its UUID, else its index."""
    for name in UUID_LABELS:
        if labels.get(name):
            return labels[name]
    return labels.get("gpu")


@dataclass(frozen=True, slots=True)
class DcgmFilter:
    """Which dcgm series are this deployment's. Patterns are shell-style (``llama-70b-*``).

    A series is kept when every given criterion matches: its pod matches one of ``pods``,
    its namespace is ``namespace``, its container matches one of ``containers``, its GPU's
    UUID is one of ``gpu_uuids``. No criterion at all keeps everything (node-wide).
    """

    pods: tuple[str, ...] = ()
    namespace: str | None = None
    containers: tuple[str, ...] = ()
    gpu_uuids: tuple[str, ...] = ()

    @property
    def node_wide(self) -> bool:
        return not (self.pods or self.namespace or self.containers or self.gpu_uuids)

    def keeps(self, labels: Labels) -> bool:
        if self.pods and not any(fnmatchcase(labels.get("pod", ""), p) for p in self.pods):
            return False
        if self.namespace and labels.get("namespace") != self.namespace:
            return False
        if self.containers and not any(fnmatchcase(labels.get("container", ""), c) for c in self.containers):
            return False
        return not self.gpu_uuids or gpu_of(labels) in self.gpu_uuids


def once_per_gpu(series: Iterable[tuple[Labels, float]]) -> list[float]:
    """One value per physical GPU: a device-wide number repeated on each MIG instance counts once."""
    by_gpu: dict[str | None, float] = {}
    for labels, value in series:
        by_gpu.setdefault(gpu_of(labels), value)
    return list(by_gpu.values())
