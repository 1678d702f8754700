"""course_lib: the shared library of the course "Memory-Augmented Transformers for Trading".

Notebooks teach, this package does the work. Every public name is importable from ``course_lib``; the
modules each have one job:

data (CSV + bundled samples), live (yfinance, Bybit), synthetic (regime market with planted motifs),
features, windows (windows, scaling, splits), memory (FAISS/torch kNN memory bank), model, training,
metrics, backtest, sizing, strategies, evaluation (walk-forward), similarity (analog search, lesson 06),
regimes (lesson 07), agent_memory (lesson 08), plots, cli, exercise (checks).
"""

from .agent_memory import *  # noqa: F401,F403
from .backtest import *  # noqa: F401,F403
from .best_practices import *  # noqa: F401,F403
from .data import *  # noqa: F401,F403
from .evaluation import *  # noqa: F401,F403
from .exercise import *  # noqa: F401,F403
from .features import *  # noqa: F401,F403
from .live import *  # noqa: F401,F403
from .memory import *  # noqa: F401,F403
from .metrics import *  # noqa: F401,F403
from .model import *  # noqa: F401,F403
from .plots import *  # noqa: F401,F403
from .regimes import *  # noqa: F401,F403
from .similarity import *  # noqa: F401,F403
from .sizing import *  # noqa: F401,F403
from .strategies import *  # noqa: F401,F403
from .synthetic import *  # noqa: F401,F403
from .training import *  # noqa: F401,F403
from .utils import *  # noqa: F401,F403
from .windows import *  # noqa: F401,F403

__version__ = "0.1.0"
