# `make run`: set up and train on the embedded dataset.  `make test`: set up and run the tests.
# Everything installs from this repository's own files (constraints/ci.txt pins CI's versions).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS := constraints/ci.txt
EXTRAS ?= dev,triton

.PHONY: setup run test gpu-check clean

$(VENV)/.installed: setup.py $(CONSTRAINTS)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[$(EXTRAS)]'
	touch $@

setup: $(VENV)/.installed

run: setup
	$(PY) -m engine.train --amp --compile

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache .benchmarks
