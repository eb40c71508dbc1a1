# The two quick-start commands: `make run` (set up + train the default matrix) and `make test`.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: setup run test bench leaderboard clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[export,hf,test]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m zoo.run runs.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

leaderboard: $(STAMP)
	$(BIN)/python -m zoo.leaderboard leaderboard

clean:
	rm -rf out .pytest_cache
