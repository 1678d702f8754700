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

.PHONY: install course test unit notebooks lab lint bench lock clean

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

## Lint, unit tests, notebook execution (papermill, small parameters) and the nbval reproducibility pass
test: install
	rm -rf build/test-notebooks
	$(VENV)/bin/ruff check course_lib tests benchmarks
	$(VENV)/bin/pytest -n 2 tests
	$(VENV)/bin/pytest --nbval-lax build/test-notebooks -n 2 --dist loadfile

unit: install
	$(VENV)/bin/pytest -n 2 tests -m "not notebooks"

lab: install
	$(VENV)/bin/jupyter lab notebooks

bench: install
	for f in benchmarks/bench_*.py; do $(PY) $$f; done

lock:
	$(PIP) freeze --exclude-editable | sed 's/+cpu//' > $(LOCK).new && mv $(LOCK).new $(LOCK)

clean:
	rm -rf build .pytest_cache
