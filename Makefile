# Two commands do all the set-up on a fresh machine with Python 3.11 and pip:
#   make demo   trains a small model offline and writes its figures and CSVs
#   make test   runs the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TF ?= tensorflow-cpu
PINS := tensorflow-cpu==2.21.0 keras==3.15.1
# The CPU wheel of torch (an unpinned one pulls gigabytes of CUDA libraries).
BACKEND_PINS := torch==2.13.0 jax==0.10.2
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test benchmark clean

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

test: $(BIN)/.installed-backends
	$(BIN)/python -m pytest -q

benchmark: $(BIN)/.installed
	$(BIN)/python benchmarks/schedule_overhead.py

clean:
	rm -rf $(VENV) keras_clr_demo_output *.egg-info .pytest_cache
