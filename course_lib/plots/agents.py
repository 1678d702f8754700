"""Plots for lesson agents. Being written."""

from __future__ import annotations

__all__: list[str] = []
