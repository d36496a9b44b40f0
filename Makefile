# finsae: one command to set up and run the main job (make run), one to set up and pass the tests (make test).
# Setup creates .venv, installs torch==2.13.0 first (the CPU wheel on this machine kind; any other torch spec
# pulls a multi-GB CUDA build), then finsae with all extras under constraints.txt so torch is never replaced.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.finsae-installed

.PHONY: setup run test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[llm,embed,serve,ray,dev]"
	touch $@

run: setup
	$(BIN)/finsae benchmark --config backtests/forward_2017.yaml
	$(BIN)/finsae benchmark --config backtests/baselines.yaml
	$(BIN)/finsae backtest --config backtests/pairs.yaml
	$(BIN)/finsae backtest --config backtests/pairs_forward.yaml
	$(BIN)/finsae explain --results results/forward_2017 --grouping sae_sup@gics_industry:density
	$(BIN)/finsae explain --results results/forward_2017 --grouping sae@gics_industry:density
	$(BIN)/finsae explain --results results/forward_2017 --grouping sae_nn@gics_industry:density
	$(BIN)/finsae report --results results/forward_2017 --pairs results/pairs_forward \
		--explanations results/forward_2017/explanations/sae_sup@gics_industry_density \
		--explanations results/forward_2017/explanations/sae_nn@gics_industry_density --out results/report.html
	$(BIN)/finsae export --results results/forward_2017 --pairs results/pairs_forward --overwrite

lint: setup
	$(BIN)/ruff check finsae tests benchmarks
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy finsae

test: setup lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) results exports .pytest_cache .ruff_cache
