# tickwire: every target does its own set-up on a fresh Debian 12 machine (run as root).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
QUICK ?=
FUZZ_SECONDS ?= 30

.PHONY: setup native images demo demo-operator test test-unit fuzz fuzz-gate bench clean

setup:
	./scripts/install-deps.sh

# Rebuild the cffi extension and the XDP object in place after editing C (setup does it too).
native: setup
	$(VENV)/bin/pip install -q --no-deps --no-build-isolation -e .

# The agent and operator images, built with podman from docker/ with no registry (about 5 minutes
# on a fresh machine, seconds when nothing changed: scripts/build-images.sh caches outside the checkout).
images:
	./scripts/podman-host.sh
	./scripts/build-images.sh

demo: setup
	$(PY) -m tickwire_demo

demo-operator: setup images
	$(PY) -m tickwire_demo.operator_demo

# The real-runtime e2e test runs the operator's agent Pod from the images in podman.
test: setup fuzz-gate images
	$(VENV)/bin/pytest -q -ra $(PYTEST_ARGS)

test-unit: setup
	$(VENV)/bin/pytest -q -ra tests/unit $(PYTEST_ARGS)

# The long random run, for developers: make fuzz FUZZ_SECONDS=600
fuzz: setup
	./native/fuzz/run.sh $(FUZZ_SECONDS)

# What `make test` runs: the committed regressions and seeds replayed, then a fixed-seed run of a
# fixed number of executions. The same inputs every time, so CI does not pass by luck.
fuzz-gate: setup
	./native/fuzz/run.sh --gate

# The benchmark (root; under 10 minutes): every contender fed by the in-kernel generator
# (tickwire-feed blast), 3 interleaved repeats, then the kernel_c tunings, the XDP mode comparison
# with both generators and the 2 ms stall check; results in bench/results/. QUICK=1: one short
# repeat of everything, under 2 minutes (make test runs it as a smoke test: shape and exact counts).
bench: setup
	$(PY) -m bench.run $(if $(QUICK),--quick,)

clean:
	rm -rf build *.egg-info native/tickwire_engine/*.so native/tickwire_engine/*.bpf.o native/fuzz/out \
		native/tickwire_feed/*.bpf.o native/tickwire_feed/blast
