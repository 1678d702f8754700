"""Shared pytest configuration: the hypothesis profiles of the property-based tests.

* ``short`` (the default, what ``make test`` and CI run): a few dozen examples per property, derandomised
  (the examples depend only on the test's code, so a CI failure reproduces on any machine) and no example
  database (nothing written next to the repository).
* ``long``: ``HYPOTHESIS_PROFILE=long .venv/bin/pytest tests/test_properties_*.py`` runs 500 random (not
  derandomised) examples per property and remembers failures in ``.hypothesis/`` so they replay first.

The property tests read ``settings.default.max_examples`` to scale their most expensive properties (those
that train a model) down from the profile's count, so one switch controls every test's effort.

Fixture ``hide_module``: makes an optional package look uninstalled (tests of the "install the extra" messages).
"""

from __future__ import annotations

import builtins
import os
import sys

import pytest
from hypothesis import HealthCheck, settings

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]

settings.register_profile(
    "short",
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=_SLOW_OK,
)
settings.register_profile(
    "long",
    max_examples=500,
    deadline=None,
    print_blob=True,
    suppress_health_check=_SLOW_OK,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "short"))


@pytest.fixture
def hide_module(monkeypatch):
    """``hide_module("pymilvus")``: importing that package (or a submodule) now fails as if it were not
    installed, for the tests of the clear message an optional extra gives when it is missing."""

    def hide(package: str) -> None:
        real_import = builtins.__import__

        def fake_import(name, *args, **kwargs):
            if name == package or name.startswith(package + "."):
                raise ImportError(f"No module named {package!r}")
            return real_import(name, *args, **kwargs)

        monkeypatch.delitem(sys.modules, package, raising=False)
        monkeypatch.setattr(builtins, "__import__", fake_import)

    return hide
