"""spendstream: meter what AI inference costs, as it happens.

Embedding services import only :mod:`spendstream.emitter` and
:mod:`spendstream.schemas`; everything else is the pipeline (``spendstream[pipeline]``).
"""

__version__ = "0.1.0"
__all__ = ["__version__", "instrument"]


def __getattr__(name: str) -> object:
    # spendstream.instrument(client, ...) is the front door of zero-code capture. It is looked up on
    # first use so that importing the package (e.g. for the contracts alone) does not import the emitter.
    if name == "instrument":
        from spendstream.emitter.instrument import instrument

        return instrument
    raise AttributeError(f"module 'spendstream' has no attribute {name!r}")
