# The two entry points of the README.  Both install what they need first (scripts/install.sh).
PYTHON ?= python3
OUT ?= runs/demo

.PHONY: install install-test demo test bench

install:
	PYTHON=$(PYTHON) bash scripts/install.sh

install-test:
	PYTHON=$(PYTHON) bash scripts/install.sh --test

# Main job (for now): build the WordNet synonym table of bert-base-uncased and print its statistics.
demo: install
	mkdir -p $(OUT)
	$(PYTHON) -m tnops.cli synonyms build --source wordnet --out $(OUT)/wordnet-bert-base-uncased.tnsyn
	$(PYTHON) -m tnops.cli synonyms stats $(OUT)/wordnet-bert-base-uncased.tnsyn
	$(PYTHON) -m tnops.cli synonyms show $(OUT)/wordnet-bert-base-uncased.tnsyn primary

# Test suite; pytest's exit code 5 ("no tests collected") is not a failure.
test: install-test
	$(PYTHON) -m pytest -q tests; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; else exit $$rc; fi

bench: install-test
	$(PYTHON) benchmarks/memory.py
