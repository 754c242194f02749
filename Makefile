# One command each: `make bench` sets up and runs the main job, `make test` sets up and runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# On a machine without CUDA the CPU build of torch is installed (2.13.0 is the CPU build pip finds on
# the project's CPU machines); with an NVIDIA driver present pip's default CUDA build is used.
TORCH ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch>=2.2" || echo "torch==2.13.0")

.PHONY: setup bench test test-slow test-deps clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@# open3d's Embree ray caster needs libusb at import time.
	@if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq libusb-1.0-0; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq libusb-1.0-0; fi; fi
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	@# open3d-cpu replaces a full open3d wheel left by an earlier setup (both install the package `open3d`).
	@if [ "$$(uname -sm)" = "Linux x86_64" ] && $(PY) -m pip show -q open3d >/dev/null 2>&1; then \
	  $(PY) -m pip uninstall -y -q open3d open3d-cpu; fi
	$(PY) -m pip install -q -e ".[train,test,viewer]"
	touch $(STAMP)

# The main job: the shipped checkpoints on their held-out episodes, one table beside the published rows
# (result JSON in runs/pretrained/), then the simulator's speed (bench_sim.json).
bench: setup
	$(VENV)/bin/embodied eval suite=pretrained
	$(VENV)/bin/embodied bench sim --quick

# The viewer's end-to-end test renders rerun's web viewer in headless Chromium.
test-deps: setup
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq --no-install-recommends chromium; fi; fi

# The fast suite (under 10 minutes on 2 cores); `make test-slow` runs the learning checks and the
# multi-process crash/resume and browser tests marked `slow` (CI runs both).
test: test-deps
	$(PY) -m pytest -q -m "not slow"

test-slow: test-deps
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) bench_*.json play_out runs/pretrained
