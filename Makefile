# Two commands do all the set-up on a fresh machine with Python 3.11 and pip:
#   make demo   trains a small model offline and writes its figures and CSVs
#   make test   lints the code (make lint), runs the whole test suite on the
#               newest pins and the TensorFlow-backend tests on the oldest
#               supported Keras (test-oldest), and builds the documentation (docs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TF ?= tensorflow-cpu
PINS := tensorflow-cpu==2.21.0 keras==3.15.1
# The oldest Keras keras_clr supports (setup.cfg), with the TensorFlow made for it.
OLDEST_VENV ?= .venv-oldest
OLDEST_PINS := tensorflow-cpu==2.19.1 keras==3.10.0
# The CPU wheel of torch (an unpinned one pulls gigabytes of CUDA libraries).
BACKEND_PINS := torch==2.13.0 jax==0.10.2
export TF_CPP_MIN_LOG_LEVEL ?= 2
# pytest-xdist: two workers per run (the machine has two cores), a test
# file at a time in its collection order (the long files come early);
# test_multiprocess_jax's tests share the processes its fixture runs.
# (loadgroup's xdist_group marks do nothing on pytest 9.2 with xdist 3.8.)
XDIST ?= -n 2 --dist loadfile --no-loadscope-reorder
# `ruff format --check` in `make lint` (FORMAT_CHECK=off skips it).
FORMAT_CHECK ?= on

.PHONY: demo lint test test-newest test-oldest docs benchmark clean

$(BIN)/.installed: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(TF),test]" \
		$(if $(filter tensorflow-cpu,$(TF)),$(PINS))
	touch $@

# JAX and PyTorch, for the backend tests only (the demo does not need them).
$(BIN)/.installed-backends: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e ".[backends]" $(BACKEND_PINS) \
		$(if $(filter tensorflow-cpu,$(TF)),$(PINS))
	touch $@

demo: $(BIN)/.installed
	$(BIN)/python examples/demo.py --output keras_clr_demo_output

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(if $(filter on,$(FORMAT_CHECK)),$(BIN)/ruff format --check .,@echo "ruff format --check: skipped (FORMAT_CHECK=$(FORMAT_CHECK))")

# Two jobs at a time: the newest run first (the longest), the docs build and
# the lint beside it, then the oldest run (each run's two xdist workers share
# the two cores); each one's output is printed whole as it ends.
test:
	$(MAKE) --no-print-directory -j2 --output-sync=target test-newest docs lint test-oldest

test-newest: $(BIN)/.installed-backends
	$(BIN)/python -m pytest -q $(XDIST)

# The TensorFlow-backend tests (no examples, no other backends) on the
# oldest supported Keras and TensorFlow, in a venv of their own.
# keras_clr itself is imported from the checkout (`python -m pytest` puts it
# on the path), so the two installs never write into it at the same time.
$(OLDEST_VENV)/bin/.installed: setup.cfg pyproject.toml
	test -x $(OLDEST_VENV)/bin/python || $(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install --quiet $(OLDEST_PINS) \
		"numpy>=1.23" "pandas>=1.5" "matplotlib>=3.6" "pytest>=7" "hypothesis>=6" \
		"scikit-learn>=1.2" "keras-tuner>=1.4.8" pytest-xdist==3.8.0
	touch $@

test-oldest: $(OLDEST_VENV)/bin/.installed
	$(OLDEST_VENV)/bin/python -m pytest -q $(XDIST) -m "not examples" \
		--ignore=tests/test_backends.py --ignore=tests/test_against_pytorch.py \
		--ignore=tests/test_multiprocess_jax.py

# The documentation site (mkdocs-material, API reference by mkdocstrings from
# the docstrings, read statically) into site/, in a venv of its own; any
# warning fails the build. Offline once the venv is installed.
DOCS_VENV ?= .venv-docs
$(DOCS_VENV)/bin/.installed: docs/requirements.txt
	test -x $(DOCS_VENV)/bin/python || $(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DOCS_VENV)/bin/python -m pip install --quiet -r docs/requirements.txt
	touch $@

docs: $(DOCS_VENV)/bin/.installed
	NO_MKDOCS_2_WARNING=1 $(DOCS_VENV)/bin/mkdocs build --strict --site-dir site

benchmark: $(BIN)/.installed
	$(BIN)/python benchmarks/schedule_overhead.py

clean:
	rm -rf $(VENV) $(OLDEST_VENV) $(DOCS_VENV) site keras_clr_demo_output *.egg-info .pytest_cache .ruff_cache
