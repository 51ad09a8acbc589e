"""spendstream: meter what AI inference costs, as it happens.

Embedding services import only :mod:`spendstream.emitter` and
:mod:`spendstream.schemas`; everything else is the pipeline (``spendstream[pipeline]``).
"""

__version__ = "0.1.0"
