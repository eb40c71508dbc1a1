# The two quick-start commands: `make run` (set up, train the default matrix, measure, write leaderboard/) and
# `make test` (the whole suite, as CI's .ci/run runs it); `make test-fast` leaves out the tests marked slow, for the
# edit-test loop (about a minute on 2 cores). README.md lists every target; docs/ is the reference.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: setup run test test-fast bench gpu-check leaderboard latency docs clean

PHONE := 'executorch==1.5.1' 'litert-torch==0.10.*' 'ai-edge-litert>=2.3'
SHARED := '^(pydantic|pydantic.core|typing.extensions|anyio|cattrs|numpy|torch|torchvision)=='

# pip byte-compiles what it installs (about a minute here). Left to the first import instead, nothing is cached where
# PYTHONDONTWRITEBYTECODE is set (it is on the development machine), and every process compiles torch again: the
# suite took 9:32 that way; --no-compile plus one compileall over every core at the end saved nothing (2:50).
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[export,hf,test]'
	@# Phone runtimes (ExecuTorch, LiteRT) pin shared packages against wandb's, so one resolver pass fails: they go
	@# in second, then the base's versions of the shared packages come back (every import checked by the tests).
	$(BIN)/pip freeze | grep -iE $(SHARED) > $(VENV)/base-pins.txt
	@# A failed phone-runtime install fails setup (and CI): the suite requires them, and no stamp is written.
	$(BIN)/pip install -q $(PHONE) && $(BIN)/pip install -q -r $(VENV)/base-pins.txt \
	  || { echo "phone runtimes (ExecuTorch, LiteRT) failed to install: setup failed" >&2; exit 1; }
	rm -f $(VENV)/.installed-* && touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m zoo.run runs.yaml

# Two workers; xdist groups in collection order (tests/conftest.py: the multiprocess group, then slow tests, first);
# -rs prints every skip's reason, --durations=25 where the time went.
XDIST := -n 2 --dist loadgroup --no-loadscope-reorder
# pytest plugins that the phone runtimes' dependencies install and no test uses (hypothesis alone is 1.5 s of
# imports): not loaded by the three pytest processes.
UNUSED_PLUGINS := -p no:hypothesispytest -p no:hydra_pytest -p no:jaxtyping -p no:kgb -p no:anyio

test: $(STAMP)
	$(BIN)/python -m pytest $(XDIST) $(UNUSED_PLUGINS) -rs --durations=25

test-fast: $(STAMP)
	$(BIN)/python -m pytest $(XDIST) $(UNUSED_PLUGINS) -rs -m "not slow"

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

# Does zoo's GPU path work here, and how fast (under 8 min on one GPU; tiny CPU path without CUDA): out/gpu-check/.
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py --out out/gpu-check

leaderboard: $(STAMP)
	$(BIN)/python -m zoo.leaderboard leaderboard

# The architecture board (leaderboard/architectures/): every architecture on every phone-CPU runtime, no training.
# Resumes from its store; a rerun with nothing changed only re-renders. Time it alone: nothing else on the cores.
latency: $(STAMP)
	$(BIN)/python -m zoo.measure --board leaderboard/architectures

# docs/'s generated tables (model and backend lists) from the registries; tests/test_docs_tables.py checks them.
docs: $(STAMP)
	$(BIN)/python benchmarks/gen_docs_tables.py

clean:
	rm -rf out .pytest_cache
