"""Plots for lesson similarity. Being written."""

from __future__ import annotations

__all__: list[str] = []
