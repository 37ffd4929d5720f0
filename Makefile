# The two entry points of the README.  Both install what they need first (scripts/install.sh).
PYTHON ?= python3
OUT ?= runs/demo

.PHONY: install install-test demo test bench

install:
	PYTHON=$(PYTHON) bash scripts/install.sh

install-test:
	PYTHON=$(PYTHON) bash scripts/install.sh --test

# Main job: ELECTRA pre-training on CPU with WordNet hard correction + soft regularization on the built-in corpus
# (Python documentation prose), its generator started from the packaged MiniLM-L6-H384 encoder (a fresh tiny
# discriminator shares its embeddings); then the false-negative statistics and examples of the exported generator.
# No dropout: the run sees each example once, and dropout slowed the fresh head's learning (the correction rate
# reached its plateau ~100 steps later) and cost 10 % of the step time.  lr 3e-4 wrecked the pretrained encoder.
DEMO_STEPS ?= 200
demo: install
	$(PYTHON) -m tnops.cli synonyms build --source wordnet --out $(OUT)/synonyms.pt
	$(PYTHON) -m tnops.cli synonyms show $(OUT)/synonyms.pt primary
	$(PYTHON) -m electra.pretrain --preset tiny --generator-from minilm --max-seq-length 64 --batch-size 16 \
		--dropout 0 --learning-rate 1e-4 --warmup-steps 10 --max-steps $(DEMO_STEPS) --log-every 50 \
		--eval-every $(DEMO_STEPS) --eval-batches 4 --output-dir $(OUT) --synonyms $(OUT)/synonyms.pt
	$(PYTHON) -m electra.fn_stats --model $(OUT)/final --max-seq-length 64 --max-batches 8 --examples 5

# Lint, then the test suite; pytest's exit code 5 ("no tests collected") is not a failure.
test: install-test
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -q tests; rc=$$?; if [ $$rc -eq 5 ]; then exit 0; else exit $$rc; fi

# The CPU benchmark suite (issue 17): the generator head at shapes a_bert, b_xlmr, c_base, forward+backward, CE and
# TN, fp32 for every CPU provider plus tnops native in bf16 (skipped, with the reason, on a CPU without native bf16
# matmuls); each case in its own process, checked against a float64 reference, then 3 interleaved rounds (fewer
# where a shape would outrun its share of 13 minutes). F.linear_cross_entropy is left out at V=250002 (~85 s a call).
# Writes benchmarks/out/cpu.json, report.md and one PNG per shape. Cut Cross-Entropy is installed if it can be.
BENCH_OUT ?= benchmarks/out
bench: install-test
	@$(PYTHON) -c "import cut_cross_entropy" 2>/dev/null || $(PYTHON) -m pip install -q --no-deps cut-cross-entropy \
		|| echo "Cut Cross-Entropy not installed: its cases are skipped"
	mkdir -p $(BENCH_OUT)
	$(PYTHON) -m pytest benchmarks -p no:cacheprovider -q -rs --bench-shapes a_bert,b_xlmr,c_base --bench-dtypes fp32,bf16 \
		-m "(fp32 or tnops_native or floor) and not (linear_ce and b_xlmr)" --bench-rounds 3 --bench-max-time 780 \
		--benchmark-json $(BENCH_OUT)/cpu.json
	$(PYTHON) benchmarks/report.py $(BENCH_OUT)/cpu.json --out $(BENCH_OUT)
