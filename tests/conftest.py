"""Shared pytest configuration: the hypothesis profiles of the property-based tests.

* ``short`` (the default, what ``make test`` and CI run): a few dozen examples per property, derandomised
  (the examples depend only on the test's code, so a CI failure reproduces on any machine) and no example
  database (nothing written next to the repository).
* ``long``: ``HYPOTHESIS_PROFILE=long .venv/bin/pytest tests/test_properties_*.py`` runs 500 random (not
  derandomised) examples per property and remembers failures in ``.hypothesis/`` so they replay first.

The property tests read ``settings.default.max_examples`` to scale their most expensive properties (those
that train a model) down from the profile's count, so one switch controls every test's effort.
"""

from __future__ import annotations

import os

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
