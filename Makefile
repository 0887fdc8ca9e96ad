# `make demo` and `make test` create .venv on first use and (re)install the project
# whenever setup.cfg changes.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-full lint bench bench-full docs package torch-env

# digits gives 12 steps per epoch: per-example masks (lower-variance gradients) prune
# 37-118-29 units at 3.06 % error where the default one-mask-per-batch keeps 39-200-37 at 3.61 %.
demo: $(STAMP)
	$(PY) train.py --model lenet_300_100 --dataset digits --method hard_concrete --set lam=0.1 \
		--set per_example=true --epochs 100 --export --run-name demo --verbose 0

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist worksteal tests

# ruff's lint rules and formatter (pyproject.toml) over the repository.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Both gate families on every keras.applications network and 200 random
# graphs (16 min on 2 cores, over the CI budget; `make test` runs a subset).
test-full: $(STAMP)
	TFSPARSE_FULL_TESTS=1 $(PY) -m pytest -q -n 2 --dist worksteal tests

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

# Torch-Pruning's side of `python -m bench.arch`, in its own environment: torch
# 2.13.0 is the CPU build on this machine's disk (plain `torch` pulls a CUDA build).
TORCH_VENV := .venv-torch
torch-env: $(TORCH_VENV)/.installed

$(TORCH_VENV)/.installed: bench/torch_side/requirements.txt
	$(PYTHON) -m venv $(TORCH_VENV)
	$(TORCH_VENV)/bin/pip install -q -r bench/torch_side/requirements.txt
	touch $@

# The documentation site (docs/ and the docstrings) into site/; a broken link,
# a missing page or a docstring that does not render fails the build.
DOCS_VENV := .venv-docs
docs: $(DOCS_VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(DOCS_VENV)/bin/mkdocs build --strict

$(DOCS_VENV)/.installed: docs/requirements.txt
	$(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/pip install -q -r docs/requirements.txt
	touch $@

# A wheel and an sdist into dist/; the wheel installed into a fresh venv runs
# the README's example outside the repository.
WHEEL_VENV := .venv-wheel
package: $(STAMP)
	rm -rf dist $(WHEEL_VENV)
	$(VENV)/bin/pip install -q build
	$(PY) -m build --outdir dist .
	$(PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/pip install -q dist/tfsparse-*.whl
	cd "$$(mktemp -d)" && TF_CPP_MIN_LOG_LEVEL=2 $(CURDIR)/$(WHEEL_VENV)/bin/python \
		$(CURDIR)/tests/helpers/readme_example.py --epochs 2
