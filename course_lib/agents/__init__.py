"""Helpers behind :mod:`course_lib.agent_memory` (lesson 08), one job per module.

* :mod:`.store` - :class:`AgentMemory`, the SQLite store (items, FTS5 text index, vectors, outcomes, tiers);
* :mod:`.scoring` - decay and the min-max normalised hybrid score;
* :mod:`.traders` - small rule-based agents and the loop that lets them share one memory;
* :mod:`.composer` - equal weights, running win rate and (discounted) Thompson sampling over agents;
* :mod:`.calibration` - confidence calibration fitted on past outcomes only, Brier score, reliability;
* :mod:`.diary` - a synthetic agent diary with planted useful memories, and retrieval metrics.

Import the public names from ``course_lib`` (or ``course_lib.agent_memory``), not from here.
"""
