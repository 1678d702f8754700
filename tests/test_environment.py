"""The conda environment, the pip lock file and the package metadata describe the same, pinned world."""

from __future__ import annotations

import re
import sys

from course_lib.notebook_runner import ROOT


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements-lock.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def _env_pins() -> dict[str, str]:
    text = (ROOT / "environment.yml").read_text()
    return {m[0].lower(): m[1] for m in re.findall(r"^\s+-\s+([A-Za-z0-9_.\-]+)==([^\s]+)\s*$", text, flags=re.M)}


def test_environment_yml_matches_lock():
    lock, env = _lock(), _env_pins()
    assert env, "environment.yml lists no pinned packages"
    mismatched = {name: (version, lock.get(name)) for name, version in env.items() if lock.get(name) != version}
    assert not mismatched, f"environment.yml and requirements-lock.txt disagree (env, lock): {mismatched}"
    assert "python=3.11" in (ROOT / "environment.yml").read_text()


def test_lock_pins_cpu_torch_and_covers_every_dependency():
    lock = _lock()
    assert lock["torch"] == "2.13.0"
    pyproject = (ROOT / "pyproject.toml").read_text()
    deps = re.findall(r'^\s+"([A-Za-z0-9_\-]+)[><=\[]', pyproject, flags=re.M)
    missing = [d for d in deps if d.lower() not in lock]
    assert not missing, f"dependencies without a pin in requirements-lock.txt: {missing}"


def test_running_interpreter_matches_lock():
    """The test run itself uses the locked versions (catches a stale .venv)."""
    from importlib.metadata import version

    lock = _lock()
    for name in ("numpy", "pandas", "faiss-cpu", "matplotlib"):
        assert version(name) == lock[name], f"{name} {version(name)} installed, lock says {lock[name]}: run `make install`"
    assert version("torch").split("+")[0] == lock["torch"]
    assert sys.version_info[:2] >= (3, 10)
