"""Serving defaults, kept import-light (the ``fedrec`` parser reads them; no torch here)."""

from __future__ import annotations

MAX_K = 1000  # largest k a request may ask for (capped at the catalog size)
DEFAULT_LAMBDA = 1e-3  # benchmarks/personalisation.py: helps 38 of 40 merchant cases (JSON there)
FINE_TUNE_EPOCHS = 2  # local fine-tuning passes of the personalisation knob
