"""Agent memory: a persistent, decaying, outcome-aware memory shared by agents (lesson 08). Being written."""

from __future__ import annotations

__all__: list[str] = []
