"""Historical similarity: which past moments look like now (lesson 06). Being written."""

from __future__ import annotations

__all__: list[str] = []
