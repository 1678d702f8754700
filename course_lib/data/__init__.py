"""Lesson 01, data: from raw bars to leak-free training windows.

* :mod:`.loaders` - CSV files and the bundled samples, validated into the course's OHLCV shape (``load_csv``
  reads in named stages: read, parse times, normalise columns, check);
* :mod:`.csv_formats` - the CSV layouts and time stamps ``load_csv`` reads; :mod:`.errors` - ``DataError``,
  ``DataWarning``;
* :mod:`.live` - yfinance and Bybit (pybit) loaders with a local cache;
* :mod:`.synthetic` - a regime-switching market with planted motifs (a known answer to test against);
* :mod:`.features` - causal features and the forward-return target;
* :mod:`.windows` - windows, the train-only scaler, purged chronological splits and walk-forward folds.
"""

from __future__ import annotations

from . import features as _features
from . import live as _live
from . import loaders as _loaders
from . import synthetic as _synthetic
from . import windows as _windows
from .features import *  # noqa: F401,F403
from .live import *  # noqa: F401,F403
from .loaders import *  # noqa: F401,F403
from .synthetic import *  # noqa: F401,F403
from .windows import *  # noqa: F401,F403

__all__: list[str] = [*_loaders.__all__, *_live.__all__, *_synthetic.__all__, *_features.__all__, *_windows.__all__]
