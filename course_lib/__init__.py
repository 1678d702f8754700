"""course_lib: the shared library of the course "Memory-Augmented Transformers for Trading".

Notebooks teach, this package does the work. Every public name is importable from ``course_lib``
(``import course_lib as cl; cl.load_sample(...)``). The packages follow the lessons:

* ``data/`` (01): loaders (CSV, bundled samples), live (yfinance, Bybit), synthetic, features, windows;
* ``memory/`` (02): the causal kNN memory bank (backends, eviction, tiers, persistence, Milvus);
* ``model/`` (03): the memory-augmented transformer (config, retrieval, attention, fusion, transformer);
* ``training/`` (04): trainer, training memory, checkpoints, the memory-vs-no-memory comparison;
* ``backtest/`` (05): engine, strategies, sizing, walk-forward evaluation; ``metrics`` (04-08);
* ``similarity`` (06): analog search (its index: ``analog_index``); ``regimes/`` (07): detection and
  study; ``agents/`` (08);
* support: ``plots/``, ``cli``, ``checks/`` + ``exercise`` (exercise checks), ``parallel``, ``utils``,
  ``notebook_runner``.
"""

from .agents import *  # noqa: F401,F403  (08)
from .backtest import *  # noqa: F401,F403  (05)
from .best_practices import *  # noqa: F401,F403  (09)
from .data import *  # noqa: F401,F403  (01)
from .exercise import *  # noqa: F401,F403
from .knn_memory import *  # noqa: F401,F403  (09, and the ladder's knn_analog arm)
from .memory import *  # noqa: F401,F403  (02)
from .metrics import *  # noqa: F401,F403  (04-08)
from .model import *  # noqa: F401,F403  (03)
from .plots import *  # noqa: F401,F403
from .readings import *  # noqa: F401,F403  (readings of intervals that lessons 06-08 repeat)
from .regimes import *  # noqa: F401,F403  (07)
from .similarity import *  # noqa: F401,F403  (06)
from .stats import *  # noqa: F401,F403  (intervals and their readings, 04-09)
from .training import *  # noqa: F401,F403  (04)
from .utils import *  # noqa: F401,F403

__version__ = "0.1.0"
