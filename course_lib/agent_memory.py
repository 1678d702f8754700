"""Agent memory (lesson 08): a persistent, decaying, outcome-aware memory that trading agents share.

The public face of :mod:`course_lib.agents` (the helpers live there, one job per module):

* :class:`AgentMemory` - items (observations, signals, decisions, outcomes...) in one SQLite file with an
  FTS5 text index and state vectors; hybrid search (importance + relevance + recency, min-max normalised);
  decay with explicit time; outcomes that only become visible when known; tiers; cleanup.
* agents (:class:`MomentumAgent`, :class:`MeanReversionAgent`, :class:`VolatilityAgent`,
  :class:`AnalogAgent`) and :func:`run_agents`, the loop that lets them share one memory;
* composers (:class:`EqualWeightComposer`, :class:`WinRateComposer`, :class:`ThompsonComposer`) and
  :func:`simulate_skill_switch` for regret curves;
* :func:`calibrate_confidence`, :func:`brier_score`, :func:`reliability_table`;
* :func:`make_agent_diary` and :func:`evaluate_retrieval` for retrieval quality with known answers.
"""

from __future__ import annotations

from .agents import calibration as _calibration
from .agents import composer as _composer
from .agents import diary as _diary
from .agents import scoring as _scoring
from .agents import store as _store
from .agents import traders as _traders
from .agents.calibration import *  # noqa: F401,F403
from .agents.composer import *  # noqa: F401,F403
from .agents.diary import *  # noqa: F401,F403
from .agents.scoring import *  # noqa: F401,F403
from .agents.store import *  # noqa: F401,F403
from .agents.traders import *  # noqa: F401,F403

__all__: list[str] = [
    *_store.__all__, *_scoring.__all__, *_composer.__all__, *_calibration.__all__, *_diary.__all__,
    *_traders.__all__,
]
