"""Market regimes: causal detectors and honest scoring (lesson 07). Being written."""

from __future__ import annotations

__all__: list[str] = []
