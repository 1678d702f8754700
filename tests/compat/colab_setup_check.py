"""Run a lesson's Colab setup cell as Colab would, against this checkout instead of GitHub (``make compat``).

What Colab does and this script reproduces:

* ``google.colab`` is importable (here: a stub module put into ``sys.modules``), so the cell takes its Colab branch;
* the working directory is a fresh, empty folder (Colab's ``/content``), with no ``course`` folder in it;
* the Python already holds torch, numpy, pandas and friends (here: the interpreter running this script, i.e. the
  compat venv with the oldest supported versions) but not ``course_lib``.

The setup cell's source is taken verbatim from the notebook and executed in a child interpreter of a throwaway
venv that sees this interpreter's packages (a ``.pth`` line) but not its ``course_lib``. Its ``git clone`` of the
course URL is redirected to the local repository with git's own ``url.<base>.insteadOf`` rule (set through
``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_0``/``GIT_CONFIG_VALUE_0``), so the cell runs unchanged and offline. Git
clones the committed HEAD: commit before you run it.

Afterwards the script checks that ``course_lib`` imports from the clone, that the bundled data loads, that the
GPU-check cell runs, and that the install kept the interpreter's own torch, numpy and pandas (Colab's versions
must not be replaced by the lock's).

Usage: ``python tests/compat/colab_setup_check.py [notebooks/01_data_preparation.ipynb]``
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEPT = ("torch", "numpy", "pandas")


def _repo_url() -> str:
    sys.path.insert(0, str(ROOT))
    try:
        from course_lib.notebook_runner import REPO_URL  # the one place that names the course repository
    except ImportError:  # an older checkout: read it off the cell itself
        REPO_URL = "https://github.com/memory-transformers-course/course"
    finally:
        sys.path.pop(0)
    return REPO_URL


def _cells(notebook: Path) -> tuple[str, str]:
    code = [c for c in json.loads(notebook.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == "code"]
    setup, gpu = ("".join(c["source"]) for c in code[:2])
    if "IS_COLAB" not in setup or "cuda" not in gpu:
        raise SystemExit(f"{notebook}: the first code cells are not the Colab setup cell and the GPU check")
    return setup, gpu


def _colab_python(where: Path) -> Path:
    """A venv whose site-packages also lists this interpreter's (Colab's preinstalled stack), minus course_lib."""
    venv.EnvBuilder(with_pip=True).create(where)
    py = where / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "colab_preinstalled.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    return py


def main(argv: list[str]) -> int:
    notebook = ROOT / (argv[0] if argv else "notebooks/01_data_preparation.ipynb")
    setup, gpu = _cells(notebook)
    url = _repo_url()
    if url not in setup:
        raise SystemExit(f"{notebook.name}: the setup cell does not clone {url}")
    probe = textwrap.dedent(
        f"""
        import importlib.metadata as md, json, os, sys, types
        before = {{n: md.version(n) for n in {KEPT!r}}}
        sys.modules["google"] = types.ModuleType("google")
        sys.modules["google.colab"] = types.ModuleType("google.colab")   # what makes IS_COLAB true
        exec(compile({setup!r}, "setup cell", "exec"))
        assert IS_COLAB, "the stub google.colab module did not switch the cell to its Colab branch"
        exec(compile({gpu!r}, "GPU check cell", "exec"))
        import course_lib as cl
        where = os.path.realpath(cl.__file__)
        assert where.startswith(os.path.realpath("course")), f"course_lib imported from {{where}}, not the clone"
        rows = len(cl.load_sample("sp500"))
        after = {{n: md.version(n) for n in {KEPT!r}}}
        print(json.dumps({{"course_lib": where, "sp500_rows": rows, "before": before, "after": after}}))
        """
    )
    with tempfile.TemporaryDirectory(prefix="colab-") as tmp:
        content = Path(tmp, "content")
        content.mkdir()
        py = _colab_python(Path(tmp, "python"))
        code = subprocess.run([py, "-c", "import course_lib"], capture_output=True, cwd=content).returncode
        if code == 0:
            raise SystemExit("course_lib is importable before the setup cell ran: the simulation is not clean")
        env = dict(os.environ, GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0=f"url.{ROOT.as_uri()}.insteadOf",
                   GIT_CONFIG_VALUE_0=url, PIP_DISABLE_PIP_VERSION_CHECK="1")
        env.pop("PYTHONPATH", None)
        run = subprocess.run([py, "-c", probe], cwd=content, env=env, capture_output=True, text=True)
        if run.returncode:
            print(run.stdout, run.stderr, sep="\n", file=sys.stderr)
            print(f"colab check: the setup cell of {notebook.name} FAILED", file=sys.stderr)
            return 1
        report = json.loads(run.stdout.strip().splitlines()[-1])
    changed = {n: (report["before"][n], report["after"][n]) for n in KEPT if report["before"][n] != report["after"][n]}
    if changed:
        print(f"colab check: the setup cell replaced the preinstalled {changed} (before, after)", file=sys.stderr)
        return 1
    kept = ", ".join(f"{n} {v}" for n, v in report["after"].items())
    print(f"colab check: {notebook.name} setup cell OK: course_lib from the clone, {report['sp500_rows']} S&P 500 "
          f"rows, preinstalled {kept} kept")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
