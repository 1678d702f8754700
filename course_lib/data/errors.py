"""The two ways the course's data layer speaks up: an error that names the problem and the fix, and a
warning that reports a documented repair (lesson 01)."""

from __future__ import annotations

__all__ = ["DataError", "DataWarning"]


class DataError(ValueError):
    """Input data the course cannot use. The message names the problem, where it is, and the fix."""


class DataWarning(UserWarning):
    """A documented repair was applied to loaded data (see ``df.attrs['load_report']``)."""
