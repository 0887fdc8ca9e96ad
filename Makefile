# `make demo` and `make test` create .venv on first use and (re)install the project
# whenever setup.cfg changes.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-full

demo: $(STAMP)
	$(PY) train.py --model lenet_300_100 --dataset digits --method hard_concrete --set lam=0.1 \
		--epochs 100 --export --run-name demo --verbose 0

test: $(STAMP)
	$(PY) -m pytest -q tests

# The whole benchmark pipeline in minutes (1 seed, epochs / 20) into bench/results/quick/.
bench: $(STAMP)
	$(VENV)/bin/pip install -q -e '.[bench]'
	$(PY) -m bench --quick

$(PY):
	$(PYTHON) -m venv $(VENV)

# Order-only dependency on the interpreter: an existing venv never triggers a reinstall;
# only a changed setup.cfg / pyproject.toml does.
$(STAMP): setup.cfg pyproject.toml | $(PY)
	$(VENV)/bin/pip install -e '.[test]'
	touch $@

# The full benchmark of the README (hours on 2 cores; resumes where it stopped).
bench-full: $(STAMP)
	$(VENV)/bin/pip install -q -e '.[bench]'
	$(PY) -m bench
