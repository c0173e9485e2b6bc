# `make run`: set up and train on the embedded dataset.  `make test`: set up and run the tests.
# Everything installs from this repository's own files (constraints/ci.txt pins CI's versions).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS := constraints/ci.txt
# dali (the 405 MiB nvidia-dali-cuda120 wheel; dali-cuda130 for CUDA 13 machines) and ffcv
# (built from source against the system libraries `make sysdeps` installs) run CPU tests in CI.
EXTRAS ?= dev,triton,dali,ffcv,dicom,hdf5,export,explain
FFCV_SYSDEPS := libopencv-dev libturbojpeg0-dev pkg-config

# The suite in 2 processes (pytest-xdist; a file's tests stay together, so module fixtures train
# once). It is CPU-bound: on a 2-core machine more workers only add contention to the
# timing-sensitive subprocess tests. TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2

.PHONY: setup sysdeps run test gpu-check gpu-check-correctness gpu-check-speed gpu-pack clean

$(VENV)/.installed: setup.py $(CONSTRAINTS) | sysdeps
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[$(EXTRAS)]'
	touch $@

setup: sysdeps $(VENV)/.installed

# FFCV compiles against OpenCV and libturbojpeg found by pkg-config: installed here when root,
# otherwise the command is printed. Nothing to do when the extras leave ffcv out.
sysdeps:
ifneq (,$(findstring ffcv,$(EXTRAS)))
	@if pkg-config --exists opencv4 libturbojpeg 2>/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && apt-get install -y -q --no-install-recommends $(FFCV_SYSDEPS); \
	else \
		echo "FFCV needs system libraries; run as root:"; \
		echo "  apt-get update && apt-get install -y --no-install-recommends $(FFCV_SYSDEPS)"; \
		echo "or leave ffcv out: make $(MAKECMDGOALS) EXTRAS=dev,triton,dali"; exit 1; \
	fi
endif

run: setup
	$(PY) -m engine.train --amp --compile

test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile
	mkdir -p .benchmarks
	$(PY) -m pytest -q bench -m ci -p no:cacheprovider --benchmark-json .benchmarks/ci.json
	$(PY) -m bench.compare .benchmarks/ci.json --reference bench/results/reference-cpu.json

# The lent GPU machine: its own python3 (torch 2.11, no venv, no internet), data from .gpu/.
# Two calls of under 5 minutes each (docs/gpu.md): CALL=1 correctness first, CALL=2 speed; each
# leaves call<N>.summary.json, .summary.md and .tar.gz in $OUT. STEPS=a,b runs named steps
# instead (bench/gpu_plan.py lists them); REHEARSE=1 runs the same schedule on the CPU.
GPU_PY ?= python3
CALL ?= 1
gpu-check:
	PYTHONPATH=. $(GPU_PY) -m bench.gpu_check --call $(CALL) --out "$${OUT:-bench/results/gpu-latest}" $(if $(STEPS),--steps $(STEPS)) $(if $(REHEARSE),--rehearse)

gpu-check-correctness:
	$(MAKE) gpu-check CALL=1

gpu-check-speed:
	$(MAKE) gpu-check CALL=2

# Fill the ignored .gpu/ (HAM subset + DermaMNIST, under 55 MiB) to carry to the GPU machine.
gpu-pack:
	python3 -m bench.gpu_pack --src ../shared/data --dest .gpu

clean:
	rm -rf $(VENV) runs .pytest_cache .benchmarks
