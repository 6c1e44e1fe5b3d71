# scoregeo: two commands set everything up on a fresh machine.
#   make demo   creates .venv (if needed) and runs the demo
#   make test   creates .venv (if needed) and runs the whole test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS := constraints.txt
OUT ?= demo-out

.PHONY: venv demo test bench-setup bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c $(CONSTRAINTS) torch==2.13.0
	$(PIP) install --quiet -c $(CONSTRAINTS) -e ".[dev]"
	touch $@

demo: venv
	$(VENV)/bin/scoregeo demo --out $(OUT)

test: venv
	$(PY) -m pytest -n 2 -q

# Peer libraries for benchmarks/ only (see the README): installed without their
# dependencies so that the pinned CPU torch stays in place.
bench-setup: venv
	$(PIP) install --quiet -c $(CONSTRAINTS) -e ".[bench]"
	$(PIP) install --quiet -c $(CONSTRAINTS) --no-build-isolation --no-deps stochman==0.3.0

bench: bench-setup
	$(PY) benchmarks/geodesic_step.py
	$(PY) benchmarks/bvp_vs_peers.py
	$(PY) benchmarks/train_score.py
	$(PY) benchmarks/samplers.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
