"""Lesson 07, market regimes.

* :mod:`.detection` - causal regime detectors (HMM forward filter, Markov switching, volatility
  thresholds, the kNN memory vote), label alignment fitted on the training period, and scoring;
* :mod:`.study` - the lesson's experiments built on them (detector comparison, regime-aware memory,
  regime-conditioned strategies).
"""

from __future__ import annotations

from . import detection as _detection
from . import study as _study
from .detection import *  # noqa: F401,F403
from .study import *  # noqa: F401,F403

__all__: list[str] = [*_detection.__all__, *_study.__all__]
