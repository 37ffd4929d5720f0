# The two entry points of the README.  Both install what they need first (scripts/install.sh).
PYTHON ?= python3
OUT ?= runs/demo

.PHONY: install install-test demo test bench

install:
	PYTHON=$(PYTHON) bash scripts/install.sh

install-test:
	PYTHON=$(PYTHON) bash scripts/install.sh --test

# Main job: pre-train a tiny ELECTRA on CPU with WordNet hard correction + soft regularization on the
# built-in corpus (Python documentation prose), then report false-negative statistics of its generator.
demo: install
	$(PYTHON) -m tnops.cli synonyms build --source wordnet --out $(OUT)/synonyms.pt
	$(PYTHON) -m tnops.cli synonyms show $(OUT)/synonyms.pt primary
	$(PYTHON) -m electra.pretrain --preset tiny --output-dir $(OUT) --synonyms $(OUT)/synonyms.pt
	$(PYTHON) -m electra.fn_stats --model $(OUT)/final --max-batches 4

# Lint, then the test suite; pytest's exit code 5 ("no tests collected") is not a failure.
test: install-test
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -q tests; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; else exit $$rc; fi

# The CPU benchmarks of the README (several minutes; each case in its own process).
bench: install-test
	$(PYTHON) benchmarks/cpu_peers.py
	$(PYTHON) benchmarks/electra_throughput.py
