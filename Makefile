# Two commands work on a fresh machine:
#   make demo   set up .venv, then run the main job (`crossentropy fit`)
#   make test   set up .venv with the test extras, then run every test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo test check bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the project's requirements change.
$(VENV)/.installed-cli: pyproject.toml constraints.txt | $(BIN)/python
	@echo "Installing crossentropy[cli] into $(VENV) (scikit-learn, SciPy, matplotlib, rich, pyarrow; a minute the first time)..."
	$(PIP) -e ".[cli]"
	touch $@

$(VENV)/.installed-test: pyproject.toml constraints.txt | $(BIN)/python
	@echo "Installing crossentropy[test] into $(VENV) (torch, JAX and the test tools; minutes the first time)..."
	$(PIP) -e ".[test]"
	touch $@ $(VENV)/.installed-cli

demo: $(VENV)/.installed-cli
	$(BIN)/crossentropy fit --out runs/demo

# One process, about 11 minutes on 2 cores from a fresh clone.
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

check: $(VENV)/.installed-test
	$(BIN)/crossentropy check

$(VENV)/.installed-bench: pyproject.toml constraints.txt | $(BIN)/python
	@echo "Installing crossentropy[test,bench] into $(VENV) (the benchmarks' peers: optax, cut-cross-entropy, pandas, polars)..."
	$(PIP) -e ".[test,bench]"
	touch $@ $(VENV)/.installed-test $(VENV)/.installed-cli

bench: $(VENV)/.installed-bench
	$(BIN)/crossentropy bench

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
