"""Plotting helpers, one module per lesson topic; all re-exported here and from ``course_lib``."""

from . import agents as _agents
from . import axes as _axes
from . import backtest as _backtest
from . import best_practices as _best_practices
from . import data as _data
from . import memory as _memory
from . import model as _model
from . import regimes as _regimes
from . import similarity as _similarity
from .agents import *  # noqa: F401,F403
from .axes import *  # noqa: F401,F403
from .backtest import *  # noqa: F401,F403
from .best_practices import *  # noqa: F401,F403
from .data import *  # noqa: F401,F403
from .memory import *  # noqa: F401,F403
from .model import *  # noqa: F401,F403
from .regimes import *  # noqa: F401,F403
from .similarity import *  # noqa: F401,F403

__all__ = [
    *_axes.__all__, *_data.__all__, *_memory.__all__, *_model.__all__, *_backtest.__all__,
    *_similarity.__all__, *_regimes.__all__, *_agents.__all__, *_best_practices.__all__,
]
