# The two commands a newcomer runs: `make demo` and `make test`.
# Each creates .venv and installs requirements.txt into it on first use; `make test` also
# installs the optional ecosystem extras (requirements-eval.txt: transformers, safetensors,
# lm-eval), so their tests run. Each file has its own stamp: editing one reinstalls it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EVAL_STAMP := $(VENV)/.installed-eval

.PHONY: setup setup-eval test demo clean-demo mutate

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $(STAMP)

$(EVAL_STAMP): requirements-eval.txt $(STAMP)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-eval.txt
	touch $(EVAL_STAMP)

setup: $(STAMP)

setup-eval: $(EVAL_STAMP)

# Two pytest-xdist workers (a test file, or the group of files sharing the multi-rank
# spawns, runs whole on one worker: tests/conftest.py); TEST_WORKERS=0 runs in-process.
TEST_WORKERS ?= 2
test: $(STAMP) $(EVAL_STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup tests

# Not in CI (long): plants the curated core mutations (tests/mutations/catalog.py) one at a
# time in scratch copies and prints caught / survived per mutation and the score.
mutate: $(STAMP) $(EVAL_STAMP)
	$(PY) tests/mutations/mutate.py --jobs $(or $(JOBS),1)

demo: $(STAMP)
	bash examples/demo.sh   # examples/_python.sh finds .venv

clean-demo:
	rm -rf build/demo
