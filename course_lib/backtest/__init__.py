"""Lesson 05, backtesting: positions to returns after costs, and the strategies that choose them.

* :mod:`.engine` - the vectorised backtester (next-bar execution, costs, metrics, bootstrap);
* :mod:`.strategies` - baselines and the memory strategies (forecast, similarity, memory-trading);
* :mod:`.sizing` - causal position sizing (volatility target, agreement, Kelly, CVaR limits);
* :mod:`.evaluation` - walk-forward evaluation that retrains per fold.

The metrics themselves live in :mod:`course_lib.metrics` (lessons 04-08 all use them).
"""

from __future__ import annotations

from . import engine as _engine
from . import evaluation as _evaluation
from . import sizing as _sizing
from . import strategies as _strategies
from .engine import *  # noqa: F401,F403
from .evaluation import *  # noqa: F401,F403
from .sizing import *  # noqa: F401,F403
from .strategies import *  # noqa: F401,F403

__all__: list[str] = [*_engine.__all__, *_strategies.__all__, *_sizing.__all__, *_evaluation.__all__]
