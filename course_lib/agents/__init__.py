"""Lesson 08, agent memory: a persistent, decaying, outcome-aware memory that trading agents share.

One job per module:

* :mod:`.store` - :class:`AgentMemory`, items (observations, signals, decisions, outcomes...) in one SQLite
  file with an FTS5 text index and state vectors; hybrid search (importance + relevance + recency, min-max
  normalised); decay with explicit time; outcomes that only become visible when known; tiers; cleanup;
  its parts: :mod:`.schema` (tables, version, validation), :mod:`.ranking` (the steps of a search),
  :mod:`.maintenance` (tiers and cleanup), :mod:`.outcomes` (decisions as known at a time) and
  :mod:`.search_mirror` (the NumPy copy searches read);
* :mod:`.scoring` - decay and the min-max normalised hybrid score;
* :mod:`.traders` - small rule-based agents (:class:`MomentumAgent`, :class:`MeanReversionAgent`,
  :class:`VolatilityAgent`, :class:`AnalogAgent`) and :func:`run_agents`, the loop that lets them share one
  memory;
* :mod:`.composer` - :class:`EqualWeightComposer`, :class:`WinRateComposer`, :class:`ThompsonComposer`
  (discounted or not) and :func:`simulate_skill_switch` for regret curves;
* :mod:`.calibration` - :func:`calibrate_confidence` fitted on past outcomes only, :func:`brier_score`,
  :func:`reliability_table`;
* :mod:`.diary` - :func:`make_agent_diary`, a synthetic diary with planted useful memories, and
  :func:`evaluate_retrieval`.
"""

from __future__ import annotations

from . import calibration as _calibration
from . import composer as _composer
from . import diary as _diary
from . import scoring as _scoring
from . import store as _store
from . import traders as _traders
from .calibration import *  # noqa: F401,F403
from .composer import *  # noqa: F401,F403
from .diary import *  # noqa: F401,F403
from .scoring import *  # noqa: F401,F403
from .store import *  # noqa: F401,F403
from .traders import *  # noqa: F401,F403

__all__: list[str] = [
    *_store.__all__, *_scoring.__all__, *_composer.__all__, *_calibration.__all__, *_diary.__all__,
    *_traders.__all__,
]
