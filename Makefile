# The two commands of the README: `make course` and `make test`. Both work from a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
LOCK   := requirements-lock.txt
STAMP  := $(VENV)/.installed
# Where torch comes from. Empty: the default index (on Linux PyPI serves the CUDA build, GBs of nvidia-*
# wheels). For a small CPU-only install: make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

.PHONY: install course test unit notebooks lab lint bench lock clean compat

$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11, 5))' || { \
	  echo "error: $(PYTHON) is missing or older than Python 3.11.5, which the pinned packages (numpy, pandas, soupsieve) need." >&2; \
	  echo "Install Python 3.11.5 or newer and name it, e.g.: make test PYTHON=python3.11" >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c $(LOCK) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch==2.13.0
	$(PIP) install --quiet -c $(LOCK) -e ".[dev,lab,scale]"
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

## Run every notebook in order on the bundled data with its full parameters: build/course/*.ipynb + .html
course: install
	$(PY) -m course_lib.notebook_runner --out build/course --html
	@echo "Executed notebooks and HTML are in build/course/"

## Lint, unit tests, notebook execution (papermill, small parameters) and the nbval reproducibility pass.
## The unit tests run beside a Milvus server (tests/milvus_server.py: started, then stopped and deleted)
test: install
	rm -rf build/test-notebooks
	$(VENV)/bin/ruff check course_lib tests benchmarks
	$(PY) tests/milvus_server.py run -- $(VENV)/bin/pytest -n 2 tests
	$(VENV)/bin/pytest --nbval-lax build/test-notebooks -n 2 --dist loadfile

unit: install
	$(VENV)/bin/pytest -n 2 tests -m "not notebooks"

lab: install
	$(VENV)/bin/jupyter lab notebooks

bench: install
	for f in benchmarks/bench_*.py; do $(PY) $$f; done

## The oldest versions pyproject.toml allows, in a separate venv (what a learner on Colab or an old env may have):
## unit tests, lessons 01-02 with small parameters, and lesson 01's Colab setup cell run as Colab would.
## torch stays at 2.13.0 (the only torch wheel available offline), see tests/compat/oldest_constraints.py.
COMPAT_VENV := build/venv-compat
COMPAT_PY   := $(COMPAT_VENV)/bin/python
compat:
	test -x $(COMPAT_PY) || $(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_PY) -m pip install --quiet --upgrade pip
	$(COMPAT_PY) tests/compat/oldest_constraints.py > $(COMPAT_VENV)/oldest.txt
	$(COMPAT_PY) -m pip install --quiet -c $(COMPAT_VENV)/oldest.txt $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch
	$(COMPAT_PY) -m pip install --quiet -c $(COMPAT_VENV)/oldest.txt -e ".[dev]"
	$(COMPAT_PY) tests/compat/oldest_constraints.py --verify
	$(COMPAT_PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	# deselected: the lock check (this venv is not the lock, on purpose) and a precondition that only pandas 3 meets
	$(COMPAT_PY) -m pytest -n 2 -p no:cacheprovider tests -m "not notebooks" \
	  --deselect tests/test_environment.py::test_running_interpreter_matches_lock \
	  --deselect tests/test_windows.py::test_make_windows_layout_and_times
	JUPYTER_PATH=$(COMPAT_VENV)/share/jupyter $(COMPAT_PY) -c 'import sys, jupyter_client.kernelspec as k; \
	  p = k.KernelSpecManager().get_kernel_spec("python3").argv[0]; sys.exit(0 if p.startswith(sys.prefix) else f"kernel {p} is not this venv")'
	JUPYTER_PATH=$(COMPAT_VENV)/share/jupyter $(COMPAT_PY) -m course_lib.notebook_runner --out build/compat --small 01_ 02_
	$(COMPAT_PY) tests/compat/colab_setup_check.py notebooks/01_data_preparation.ipynb

lock:
	$(PIP) freeze --exclude-editable | sed 's/+cpu//' > $(LOCK).new && mv $(LOCK).new $(LOCK)

clean:
	rm -rf build .pytest_cache
