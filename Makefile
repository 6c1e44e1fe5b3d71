# scoregeo: two commands set everything up on a fresh machine.
#   make demo   creates .venv (if needed) and runs the demo
#   make test   creates .venv (if needed) and runs the whole test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS := constraints.txt
OUT ?= demo-out

.PHONY: venv demo test bench-setup bench-fisher-setup bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c $(CONSTRAINTS) torch==2.13.0
	$(PIP) install --quiet -c $(CONSTRAINTS) -e ".[dev,diffusers]"
	touch $@

demo: venv
	$(VENV)/bin/scoregeo demo --out $(OUT)

test: venv
	$(PY) -m pytest -n 2 -q

# Peer libraries for benchmarks/ only (see the README): installed without their
# dependencies so that the pinned CPU torch stays in place.
bench-setup: venv bench-fisher-setup
	$(PIP) install --quiet -c $(CONSTRAINTS) -e ".[bench]"
	$(PIP) install --quiet -c $(CONSTRAINTS) --no-build-isolation --no-deps stochman==0.3.0

# BackPACK, curvlinops and nngeometry for benchmarks/fisher_vs_peers.py, laplace-torch for
# benchmarks/laplace_vs_peers.py: they declare torchvision,
# whose registry build would replace the CPU torch, and run without it; their other dependencies
# are installed in a second step, pinned in constraints.txt.
bench-fisher-setup: venv
	$(PIP) install --quiet -c $(CONSTRAINTS) --no-deps backpack-for-pytorch==1.7.1 curvlinops-for-pytorch==3.0.1 nngeometry==0.4 unfoldNd==0.2.3 einconv==0.1.0
	$(PIP) install --quiet -c $(CONSTRAINTS) --no-deps laplace-torch==0.3 torchmetrics==1.9.0 lightning-utilities==0.15.3
	$(PIP) install --quiet -c $(CONSTRAINTS) einops==0.8.2 linear_operator==0.6.1 opt-einsum==3.4.0

bench: bench-setup
	$(PY) benchmarks/geodesic_step.py
	$(PY) benchmarks/bvp_vs_peers.py
	$(PY) benchmarks/train_score.py
	$(PY) benchmarks/samplers.py
	$(PY) benchmarks/fisher_vs_peers.py
	$(PY) benchmarks/laplace_vs_peers.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
