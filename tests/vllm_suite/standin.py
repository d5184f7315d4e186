"""A CPU stand-in for the surface of ``vllm.LLM`` that drox's engine uses, built from vLLM's own output classes.

It answers ``generate`` with real ``vllm.RequestOutput`` / ``CompletionOutput`` / ``Logprob`` objects computed by
plain full-sequence forward passes of its own copy of a HF model, takes weights through the path a colocated
engine exposes (``llm_engine.model_executor.driver_worker.model_runner.model.load_weights``, HF names), and records
``sleep`` / ``wake_up`` / ``reset_prefix_cache`` calls. What it does not reproduce: vLLM's kernels, batching,
scheduler and memory management (those need a GPU).
"""

from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import List

import torch
from vllm import CompletionOutput, RequestOutput, SamplingParams
from vllm.logprobs import Logprob


class _LoadsHFNames:
    """The vLLM model's ``load_weights``: (HF name, tensor) pairs copied into the stand-in's own model."""

    def __init__(self, owner: "CPUStandInLLM"):
        self.owner = owner

    def load_weights(self, weights):
        params = dict(self.owner.model.named_parameters())
        loaded = set()
        for name, tensor in weights:
            if name not in params:
                raise KeyError(f"vLLM stand-in: no parameter named {name}")
            params[name].data.copy_(tensor)
            loaded.add(name)
        self.owner.events.append(("load_weights", len(loaded)))
        self.owner.loaded_names.append(loaded)
        return loaded


class CPUStandInLLM:
    SamplingParams = SamplingParams

    def __init__(self, model, tokenizer, perturb: float = 0.5):
        self.model = copy.deepcopy(model.get_base_model() if hasattr(model, "get_base_model") else model).eval()
        if hasattr(model, "get_base_model"):  # a LoRA policy: the stand-in holds a plain model, as vLLM would
            self.model = self.model.merge_and_unload() if hasattr(self.model, "merge_and_unload") else self.model
        with torch.no_grad():  # start from other weights, so that a missing push shows
            for p in self.model.parameters():
                p.add_(torch.randn_like(p) * perturb)
        self.tokenizer = tokenizer
        self.events: List[tuple] = []
        self.loaded_names: List[set] = []
        runner = SimpleNamespace(model=_LoadsHFNames(self))
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(driver_worker=SimpleNamespace(model_runner=runner)))
        self.awake = {"weights": True, "kv_cache": True}

    # -- lifecycle
    def sleep(self, level: int = 1):
        self.events.append(("sleep", level))
        self.awake = {"weights": False, "kv_cache": False}

    def wake_up(self, tags=None):
        self.events.append(("wake_up", tuple(tags or ())))
        for tag in tags or ("weights", "kv_cache"):
            self.awake[tag] = True

    def reset_prefix_cache(self):
        self.events.append(("reset_prefix_cache",))
        return True

    # -- requests
    @torch.no_grad()
    def _log_softmax(self, ids: List[int], temperature: float = 1.0) -> torch.Tensor:
        logits = self.model(input_ids=torch.tensor([ids])).logits[0].float()  # [L, V]
        return torch.log_softmax(logits / temperature, -1)

    def generate(self, prompts, sampling_params, use_tqdm=True):
        assert all(self.awake.values()), "generate() on a sleeping engine"
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        self.events.append(("generate", len(prompts)))
        return [self._one(i, p["prompt_token_ids"], sp) for i, (p, sp) in enumerate(zip(prompts, params))]

    def _one(self, i: int, prompt: List[int], sp) -> RequestOutput:
        assert isinstance(sp, SamplingParams)
        prompt_logprobs = None
        if sp.prompt_logprobs is not None:
            lsm = self._log_softmax(prompt)  # raw (temperature 1), as vLLM's prompt log-probs
            prompt_logprobs = [None]
            for pos in range(1, len(prompt)):
                row, tok = lsm[pos - 1], prompt[pos]
                rank = int((row > row[tok]).sum()) + 1
                prompt_logprobs.append({tok: Logprob(logprob=float(row[tok]), rank=rank)})
        outputs = []
        for k in range(sp.n):
            gen = torch.Generator().manual_seed((sp.seed or 0) + k)
            ids, logprobs, finish = [], [], "length"
            for _ in range(sp.max_tokens):
                lsm = self._log_softmax(prompt + ids, sp.temperature)[-1]  # processed: temperature (top_p = 1 here)
                tok = int(torch.multinomial(lsm.exp(), 1, generator=gen))
                ids.append(tok)
                logprobs.append({tok: Logprob(logprob=float(lsm[tok]), rank=int((lsm > lsm[tok]).sum()) + 1)})
                if tok in sp.stop_token_ids or tok == self.tokenizer.eos_token_id:
                    finish = "stop"
                    break
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            outputs.append(CompletionOutput(index=k, text=text, token_ids=ids,
                                            cumulative_logprob=sum(d[t].logprob for d, t in zip(logprobs, ids)),
                                            logprobs=logprobs if sp.logprobs is not None else None,
                                            finish_reason=finish))
        return RequestOutput(request_id=str(i), prompt=None, prompt_token_ids=list(prompt),
                             prompt_logprobs=prompt_logprobs, outputs=outputs, finished=True)
