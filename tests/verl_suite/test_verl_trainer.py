"""DroxSyncTrainer (trainer_mode drox_sync) against verl 0.9.1's own V1 advantage step, with TransferQueue replaced
by an in-memory stand-in (fast) and, marked slow, the real TransferQueue on a local Ray (``make test-verl``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("verl", reason="the verl suite runs in its own environment: make test-verl")

import transfer_queue  # noqa: E402
from transfer_queue import KVBatchMeta  # noqa: E402
from verl.utils.tensordict_utils import list_of_dict_to_tensordict  # noqa: E402

from drox.errors import ConfigError  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import TINY_OVERRIDES  # noqa: E402

HF = ["model=hf", "model.path=Qwen/Qwen2.5-0.5B-Instruct"]


class MemoryTQ:
    """TransferQueue's kv_batch_put / kv_batch_get over a dict: one row of fields per key, handed back as verl's
    agent loop builds them (list_of_dict_to_tensordict: variable-length tensors nested, anything else a list).
    Fields a row lacks are left out, as the real store does for the trainer's optional fields."""

    def __init__(self):
        self.rows = {}

    def kv_batch_put(self, keys, partition_id, fields=None, tags=None, **_):
        for name in (fields.keys() if fields is not None else []):
            column = fields[name]
            values = column.unbind(0) if isinstance(column, torch.Tensor) else list(column)
            for key, value in zip(keys, values):
                self.rows.setdefault((partition_id, key), {})[name] = value
        names = sorted({n for k in keys for n in self.rows.get((partition_id, k), {})})
        return KVBatchMeta(keys=list(keys), tags=list(tags or [{} for _ in keys]), partition_id=partition_id,
                           fields=names)

    def kv_batch_get(self, keys, partition_id, select_fields=None):
        rows = [self.rows[(partition_id, k)] for k in keys]
        names = select_fields or sorted(rows[0])
        return list_of_dict_to_tensordict([{n: r[n] for n in names if n in r} for r in rows])


def _trajectories():
    """Two groups as verl's agent loop stores them: keys {uid}_{session}_0, rm_scores at the last token, the entropy
    that _compute_old_log_prob writes, equal rollout/old log-probs (IS weights 1), reward_extra_info per source."""
    spec = [("a", 2, 1, 1, [0.9, 0.1]), ("b", 3, 1, 0, [0.2, 0.3, 0.4]), ("a", 1, 0, 1, [0.8]),
            ("b", 2, 1, 0, [0.05, 0.7]), ("a", 3, 0, 0, [0.6, 0.0, 0.1])]
    keys, rows, session = [], [], {}
    for uid, n, outcome, fmt, entropy in spec:
        s = session.setdefault(uid, 0)
        session[uid] += 1
        keys.append(f"{uid}_{s}_0")
        score = outcome + 0.5 * fmt
        rm = torch.zeros(n)
        rm[-1] = score
        rows.append({"uid": uid, "response_mask": torch.ones(n, dtype=torch.int64), "rm_scores": rm,
                     "old_log_probs": torch.full((n,), -1.0), "rollout_log_probs": torch.full((n,), -1.0),
                     "entropy": torch.tensor(entropy),
                     "extra_fields": {"reward_extra_info": {"outcome": float(outcome), "format": float(fmt),
                                                            "acc": float(outcome), "score": score}}})
    return keys, rows


def _verl_config(*extra):
    from drox.cli.main import compose
    from drox.integrations.verl.launch import translate
    from drox.integrations.verl.resolve import compose_verl_config

    plan = translate(compose([*TINY_OVERRIDES, *HF, *extra]), run_dir=Path("/tmp/drox-verl-test"))
    return compose_verl_config(plan.overrides)


def _trainer(config):
    from drox.integrations.verl.advantage import TrainerSide
    from drox.integrations.verl.trainer import DroxSyncTrainer

    trainer = DroxSyncTrainer.__new__(DroxSyncTrainer)  # verl's own pattern for trainer-method tests
    from drox.integrations.verl.r3 import R3Options

    trainer.config = config
    trainer.drox, trainer.drox_r3 = TrainerSide.from_config(config.drox), R3Options.from_config(config.drox)
    return trainer


def _run_step(store, config):
    keys, rows = _trajectories()
    store.kv_batch_put(keys, "train", list_of_dict_to_tensordict(rows))
    batch = KVBatchMeta(keys=keys, tags=[{} for _ in keys], partition_id="train")
    metrics = {}
    out = _trainer(config)._compute_advantage(batch, metrics)
    got = store.kv_batch_get(keys, "train", ["advantages", "returns", "response_mask", "rollout_is_weights"])
    return out, got, metrics


DVAO = (1.178511, -0.235702, -0.942809)
"""Group a's DVAO advantages (outcome 1, 0, 0 weight 1; format 1, 1, 0 weight 0.5), worked in the main suite."""


def test_the_drox_sync_trainer_is_registered_and_runs_as_sync(monkeypatch):
    from verl.trainer.ppo.v1 import get_trainer_cls
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    from drox.integrations.verl.trainer import DroxSyncTrainer

    assert get_trainer_cls("drox_sync") is DroxSyncTrainer
    seen = {}

    def verls_constructor(self, config):
        seen["mode"] = config.trainer.v1.trainer_mode

    monkeypatch.setattr(PPOTrainerSync.__mro__[1], "__init__", verls_constructor)
    config = _verl_config("+filter=entropy")
    assert config.trainer.v1.trainer_mode == "drox_sync"
    trainer = DroxSyncTrainer(config)
    assert seen["mode"] == "sync" and trainer.drox.entropy_rho == 0.2  # verl's constructor sees plain sync


def test_dvao_and_the_entropy_mask_through_verls_advantage_step(monkeypatch):
    store = MemoryTQ()
    monkeypatch.setattr(transfer_queue, "kv_batch_get", store.kv_batch_get)
    monkeypatch.setattr(transfer_queue, "kv_batch_put", store.kv_batch_put)
    config = _verl_config("+reward=[outcome,format]", "reward.format.weight=0.5", "trainer.advantage.combine=dvao",
                          "+filter=entropy", "filter.entropy.rho=0.4")
    out, got, metrics = _run_step(store, config)
    assert isinstance(out, KVBatchMeta) and "advantages" in out.fields
    adv = got["advantages"].to_padded_tensor(0.0)
    a0, a2, a4 = DVAO
    torch.testing.assert_close(adv, torch.tensor([[a0, a0, 0], [0, 0, 0], [a2, 0, 0], [0, 0, 0], [a4, a4, a4]]),
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(got["returns"].to_padded_tensor(0.0), adv)
    # 11 valid tokens, rho 0.4: the 5 highest entropies stay in the loss mask; lengths are unchanged
    assert got["response_mask"].to_padded_tensor(0).tolist() == [[1, 0, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0],
                                                                 [1, 0, 0]]
    assert got["response_mask"].offsets().tolist() == [0, 2, 5, 6, 8, 11]
    assert got["rollout_is_weights"].to_padded_tensor(0.0).sum() == 11  # verl's own step ran first (TIS, weights 1)
    assert metrics["drox/filter/entropy/n_kept"] == 5.0 and "drox/advantage/sigma/format" in metrics


def test_without_drox_options_the_step_is_verls_own(monkeypatch):
    """combine=sum and no token mask: verl's grpo advantages stay as verl wrote them. Group a's scores 1.5, 0.5, 0:
    mean 2/3, unbiased std 0.7638 -> 1.0911, -0.2182, -0.8729."""
    store = MemoryTQ()
    monkeypatch.setattr(transfer_queue, "kv_batch_get", store.kv_batch_get)
    monkeypatch.setattr(transfer_queue, "kv_batch_put", store.kv_batch_put)
    config = _verl_config("+reward=[outcome,format]", "reward.format.weight=0.5")
    assert not _trainer(config).drox.active
    _, got, metrics = _run_step(store, config)
    adv = got["advantages"].to_padded_tensor(0.0)
    assert [adv[0, 0].item(), adv[2, 0].item(), adv[4, 0].item()] == pytest.approx([1.0911, -0.2182, -0.8729],
                                                                                   abs=1e-4)
    assert not any(k.startswith("drox/") for k in metrics)


def test_kl_in_reward_cannot_meet_a_combiner():
    from omegaconf import open_dict

    from drox.integrations.verl.trainer import DroxSyncTrainer

    config = _verl_config("+reward=[outcome,format]", "trainer.advantage.combine=dvao")
    with open_dict(config):
        config.algorithm.use_kl_in_reward = True
    with pytest.raises(ConfigError, match="algorithm.use_kl_in_reward would be lost"):
        DroxSyncTrainer(config)


@pytest.mark.slow
def test_the_same_step_on_the_real_transfer_queue(tmp_path):
    """The stand-in's layout is TransferQueue's own: the same step on a real TransferQueue (local Ray with 8
    logical CPUs and 2 storage units, as a 2-core machine needs; about 40 s)."""
    import subprocess

    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
sys.argv = ["x"]
import ray, transfer_queue as tq, torch
import test_verl_trainer as t
ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
from omegaconf import open_dict
config = t._verl_config("+reward=[outcome,format]", "reward.format.weight=0.5", "trainer.advantage.combine=dvao",
                        "+filter=entropy", "filter.entropy.rho=0.4")
with open_dict(config):
    config.transfer_queue.enable = True
    config.transfer_queue.backend.SimpleStorage.num_data_storage_units = 2
tq.init(config.transfer_queue)
try:
    _, got, _ = t._run_step(tq, config)
    print("ADV", got["advantages"].to_padded_tensor(0.0).flatten().tolist())
    print("MASK", got["response_mask"].to_padded_tensor(0).flatten().tolist())
finally:
    tq.close()
    ray.shutdown()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = {line.split(" ", 1)[0]: eval(line.split(" ", 1)[1]) for line in out.stdout.splitlines()
             if line.startswith(("ADV", "MASK"))}
    a0, a2, a4 = DVAO
    assert lines["ADV"] == pytest.approx([a0, a0, 0, 0, 0, 0, a2, 0, 0, 0, 0, 0, a4, a4, a4], abs=1e-5)
    assert lines["MASK"] == [1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 0, 1, 0, 0]


# ------------------------------------------------------------------------------------------------ the sampler


def _buffer(**kwargs):
    from omegaconf import OmegaConf

    from drox.integrations.verl.sampler import DroxReplayBuffer

    return DroxReplayBuffer("sync", OmegaConf.create({}), 8, "drop", OmegaConf.create({"train_batch_size": 3, **kwargs}),
                            refill_fn=lambda *a, **k: None)


def _finished_groups(store, buffer):
    """Three finished groups: "hi" (σ = (1, 0), max 1), "lo" (σ = (0.05, 0)), "same" (σ max 1, every rollout
    correct: DAPO's all-equal group)."""
    groups = {"hi": ([[-1, -2], [-3, -2]], [1, 0]), "lo": ([[-1, -1], [-1.1, -1]], [1, 0]),
              "same": ([[-1, -3], [-2, -1]], [1, 1])}
    keys, rows = [], []
    for uid, (L, acc) in groups.items():
        for s, (row, a) in enumerate(zip(L, acc)):
            keys.append(f"{uid}_{s}_0")
            rows.append({"extra_fields": {"drox_L": row, "reward_extra_info": {"acc": float(a)}}})
    store.kv_batch_put(keys, "train", list_of_dict_to_tensordict(rows))
    buffer.partitions["train"] = {k: {"status": "success"} for k in keys}
    buffer.finished_keys["train"] = set(groups)


def test_the_sampler_evicts_low_sigma_groups_and_dapos(monkeypatch):
    from verl.utils.import_utils import load_extern_type

    from drox.integrations.verl.sampler import DroxReplayBuffer

    assert load_extern_type("pkg://drox.integrations.verl.sampler", "DroxReplayBuffer") is DroxReplayBuffer
    store = MemoryTQ()
    monkeypatch.setattr(transfer_queue, "kv_batch_get", store.kv_batch_get)
    sigma_only = _buffer(sigma_threshold=0.1)
    _finished_groups(store, sigma_only)
    assert sigma_only.group_sigma_max("train") == pytest.approx({"hi": 1.0, "lo": 0.05, "same": 1.0})
    assert sigma_only._dapo_filtered_keys("train")[0] == {"lo"}
    assert sigma_only._dapo_filtered_keys("val")[0] == set()  # validation keeps everything
    both = _buffer(sigma_threshold=0.1, dapo_metric="acc")
    _finished_groups(store, both)
    assert both._dapo_filtered_keys("train")[0] == {"lo", "same"}
    assert both.filter_groups_metric == "acc" and sigma_only.filter_groups_metric == "drox_sigma_max"
    assert (sigma_only.gen_batch_size, sigma_only.train_batch_size) == (1, 3)  # exact refill, one prompt a fetch


def test_the_sampler_refuses_settings_that_filter_nothing():
    with pytest.raises(ConfigError, match="DroxReplayBuffer filters nothing"):
        _buffer()


# ------------------------------------------------------------------------------------------------ DRO's R3


def test_r3_in_the_trainer_by_hand(monkeypatch):
    """R3 (DRO v1 §4.1.3) in verl's advantage step. Group a: L = [[-1, -2], [-3, -2], [-2, -2]]: σ = (√(2/3), 0),
    sigma_norm weights (1, 0), R3 = (-1, -3, -2); outcome rewards 1, 0, 1 plus 0.5·R3 -> 0.5, -1.5, 0 (mean -1/3,
    unbiased std 1.0408) -> GRPO 0.8006, -1.1209, 0.3203 on every valid token. Group b: σ = 0, R3 = 0, equal
    totals -> 0."""
    store = MemoryTQ()
    monkeypatch.setattr(transfer_queue, "kv_batch_get", store.kv_batch_get)
    monkeypatch.setattr(transfer_queue, "kv_batch_put", store.kv_batch_put)
    config = _verl_config("+reward=[outcome,variance]", "reward.variance.weight=0.5")
    assert config.trainer.v1.trainer_mode == "drox_sync" and config.drox.trainer.r3
    spec = [("a", 2, 1.0, [-1.0, -2.0]), ("a", 1, 0.0, [-3.0, -2.0]), ("b", 2, 1.0, [-1.0, -1.0]),
            ("a", 3, 1.0, [-2.0, -2.0]), ("b", 1, 1.0, [-1.0, -1.0])]
    keys, rows, session = [], [], {}
    for uid, n, outcome, L in spec:
        s = session.setdefault(uid, 0)
        session[uid] += 1
        keys.append(f"{uid}_{s}_0")
        rm = torch.zeros(n)
        rm[-1] = outcome
        rows.append({"uid": uid, "response_mask": torch.ones(n, dtype=torch.int64), "rm_scores": rm,
                     "old_log_probs": torch.zeros(n), "rollout_log_probs": torch.zeros(n),
                     "extra_fields": {"drox_L": L, "reward_extra_info": {"outcome": outcome, "acc": outcome}}})
    store.kv_batch_put(keys, "train", list_of_dict_to_tensordict(rows))
    metrics = {}
    _trainer(config)._compute_advantage(KVBatchMeta(keys=keys, tags=[{} for _ in keys], partition_id="train"),
                                        metrics)
    adv = store.kv_batch_get(keys, "train", ["advantages"])["advantages"].to_padded_tensor(0.0)
    total = torch.tensor([0.5, -1.5, 0.0])
    a = (total - total.mean()) / (total.std() + 1e-6)
    assert a.tolist() == pytest.approx([0.8006, -1.1209, 0.3203], abs=1e-4)
    expected = torch.tensor([[a[0], a[0], 0], [a[1], 0, 0], [0, 0, 0], [a[2], a[2], a[2]], [0, 0, 0]])
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-5)
    # group b's σ are all 0, so sigma_norm gives it weights 0 and R3 = 0 (its rollouts are indistinguishable)
    assert metrics["drox/reward/variance/mean"] == pytest.approx((-1 - 3 - 2 + 0 + 0) / 5)


class CharTok:
    """id = ord(char); the test doubles' tokenizer (tests/doubles.py) without torch."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)


class FakeServer:
    """verl's server manager: the scoring request answers prompt_logprobs in verl's layout, entry t = [log p of
    token t+1] with a padding entry last; here token p gets -p/10."""

    def __init__(self):
        self.calls = []

    async def generate(self, request_id, prompt_ids, sampling_params, **_):
        from verl.workers.rollout.replica import TokenOutput

        self.calls.append((list(prompt_ids), dict(sampling_params)))
        logprobs = [[-(t + 1) / 10] for t in range(len(prompt_ids) - 1)] + [[0.0]]
        return TokenOutput(token_ids=[0], extra_fields={"prompt_logprobs": logprobs})


def test_the_r3_agent_loop_scores_the_reference_after_the_reasoning(monkeypatch):
    """The prompt "Q: 2+2?" (7 tokens), the response "2+2 is \\boxed{5}": the reasoning is "2+2 is ", the template's
    head "2+2 is \\boxed{" (14 tokens), then the reference "4" at position 21, whose log-prob is entry 20: -2.1."""
    import asyncio

    from omegaconf import OmegaConf
    from verl.experimental.agent_loop.agent_loop import AgentLoopOutput
    from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop

    from drox.integrations.verl.agent_loop import DroxR3AgentLoop
    from drox.integrations.verl.r3 import scoring_request

    tok = CharTok()
    prompt, response = tok("Q: 2+2?")["input_ids"], tok("2+2 is \\boxed{5}")["input_ids"]

    async def generated(self, sampling_params, **kwargs):
        return AgentLoopOutput(prompt_ids=prompt, response_ids=response, response_mask=[1] * len(response),
                               num_turns=2, metrics={})

    monkeypatch.setattr(SingleTurnAgentLoop, "run", generated)

    async def go():
        agent = DroxR3AgentLoop.__new__(DroxR3AgentLoop)
        agent.config = _verl_config("+reward=variance")
        agent.server_manager, agent.tokenizer, agent.loop = FakeServer(), tok, asyncio.get_running_loop()
        out = await agent.run({"temperature": 1.0}, reward_model={"ground_truth": "4"}, extra_info=None)
        return agent, out

    agent, out = asyncio.run(go())
    ids, params = agent.server_manager.calls[-1]
    assert tok.decode(ids) == "Q: 2+2?2+2 is \\boxed{4" and params == scoring_request()
    assert out.extra_fields["drox_L"] == pytest.approx([-2.1])
    assert out.response_ids == response  # the rollout itself is the single-turn loop's
    assert OmegaConf.load(str(Path(__file__).resolve().parents[2] / "integrations/verl/config/agent_loops.yaml"))[0][
        "_target_"] == "drox.integrations.verl.agent_loop.DroxR3AgentLoop"


# ------------------------------------------------------------------------------------------------ dense PRM rewards

PRM_TEXTS = ["1+1=2\n2+2=4", "1+1=3\n3+3=6!"]
PRM_ROW = {"answer": "4", "steps": ["1 + 1 = 2", "2 + 2 = 4"], "prompt": "Hi"}


def _scored_by_the_reward_manager(config, texts):
    """(reward_score, reward_extra_info) of each response from DroxRewardManager.run_single on a real DataProto, as
    verl's reward loop hands it one finished trajectory (the policy tokenizer: doubles.CharTok, token t = character
    t)."""
    import asyncio
    import json

    import numpy as np
    from verl import DataProto

    from doubles import CharTok
    from drox.integrations.verl.reward_manager import DroxRewardManager

    info = {"index": 0, "problem_id": "arithmetic-train-0", "split": "train", "drox_task": "arithmetic",
            "drox_verifier": "math", "drox_row": json.dumps({k: v for k, v in PRM_ROW.items() if k != "prompt"})}

    async def one(text):
        p = torch.tensor([[ord(c) for c in "Hi"]])
        r = torch.tensor([[ord(c) for c in text]])
        data = DataProto.from_dict(
            tensors={"prompts": p, "responses": r, "input_ids": torch.cat([p, r], 1),
                     "attention_mask": torch.ones(1, p.shape[1] + r.shape[1], dtype=torch.long)},
            non_tensors={"data_source": np.array(["drox/arithmetic"], dtype=object),
                         "reward_model": np.array([{"style": "rule", "ground_truth": "4"}], dtype=object),
                         "extra_info": np.array([info], dtype=object)})
        manager = DroxRewardManager(config=config, tokenizer=CharTok(), compute_score=None)
        out = await manager.run_single(data)
        return out["reward_score"], out["reward_extra_info"]

    return [asyncio.run(one(text)) for text in texts]


def _dense_prm_step(monkeypatch):
    """+reward=[outcome,prm] with reward.prm.dense=true, end to end on the CPU side of verl: DroxRewardManager scores
    each trajectory (reward_score = the outcome at the last token, the steps in reward_extra_info.drox_steps), verl's
    own advantage step runs GRPO over rm_scores, then DroxSyncTrainer adds the steps' reward-to-go. Rows: group a =
    PRM_TEXTS (rows 0 and 2, lengths 11 and 12), group b = one rollout without steps (row 1). Returns what the
    trainer wrote (advantages, returns) and its metrics."""
    store = MemoryTQ()
    monkeypatch.setattr(transfer_queue, "kv_batch_get", store.kv_batch_get)
    monkeypatch.setattr(transfer_queue, "kv_batch_put", store.kv_batch_put)
    config = _verl_config("+reward=[outcome,prm]", "reward.prm.dense=true", "reward.prm.weight=0.5")
    assert config.trainer.v1.trainer_mode == "drox_sync" and _trainer(config).drox.dense
    texts = [PRM_TEXTS[0], "none", PRM_TEXTS[1]]
    scored = _scored_by_the_reward_manager(config, texts)
    assert [s for s, _ in scored] == [1.0, 0.0, 0.0]
    keys = ["a_0_0", "b_0_0", "a_1_0"]
    rows = []
    for key, text, (reward, info) in zip(keys, texts, scored):
        n = len(text)
        rm = torch.zeros(n)
        rm[-1] = reward
        rows.append({"uid": key[0], "response_mask": torch.ones(n, dtype=torch.int64), "rm_scores": rm,
                     "old_log_probs": torch.zeros(n), "rollout_log_probs": torch.zeros(n),
                     "extra_fields": {"reward_extra_info": info}})
    store.kv_batch_put(keys, "train", list_of_dict_to_tensordict(rows))
    metrics = {}
    _trainer(config)._compute_advantage(KVBatchMeta(keys=keys, tags=[{} for _ in keys], partition_id="train"),
                                        metrics)
    return store.kv_batch_get(keys, "train", ["advantages", "returns"]), metrics


def test_dense_prm_through_verls_advantage_step_by_hand(monkeypatch):
    """Hand values as in the main suite (test_dense_prm_advantages_by_hand): verl's GRPO over the outcomes 1, 0 gives
    ±0.7071; the step rewards 1, 1 | 0, 1 are normalised to +0.5, +0.5 | -1.5, +0.5 (mean 0.75, unbiased std 0.5),
    reward-to-go row 0 = [1.0 ×5, 0.5 ×6], row 2 = [-1.0 ×5, 0.5 ×6, 0]; row 1 (a group of one, no steps) gets 0."""
    got, metrics = _dense_prm_step(monkeypatch)
    adv = got["advantages"].to_padded_tensor(0.0)  # [3, 12]
    seq, z = 0.5 / (0.5 ** 0.5 + 1e-6), 0.25 / (0.5 + 1e-6)
    expected = torch.zeros(3, 12)
    expected[0, :5], expected[0, 5:11] = seq + 2 * z, seq + z
    expected[2, :5], expected[2, 5:11], expected[2, 11] = -seq - 2 * z, -seq + z, -seq
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(got["returns"].to_padded_tensor(0.0), adv)
    assert got["advantages"].offsets().tolist() == [0, 11, 15, 27]  # nested as verl stores them
    assert metrics["drox/reward/prm/steps_placed_frac"] == 1.0


def test_dense_prm_through_verl_equals_drox_s_own_trainer(monkeypatch):
    """The strongest check: group a through verl (_dense_prm_step) equals drox's own trainer on the same two rollouts
    (the prm and outcome sources scored by drox's combiner on a RolloutBatch, then trainers/loop.advantages)."""
    from types import SimpleNamespace

    from doubles import CharTok, make_batch
    from drox.cli.main import compose
    from drox.pipeline import build_pipeline
    from drox.rewards.base import ScoringContext, score
    from drox.tasks.verify import MathVerifier
    from drox.trainers.loop import Collected, advantages

    verl_adv = _dense_prm_step(monkeypatch)[0]["advantages"].to_padded_tensor(0.0)  # [3, 12]
    cfg = compose([*TINY_OVERRIDES, "+reward=[outcome,prm]", "reward.prm.dense=true", "reward.prm.weight=0.5"])
    tok = CharTok()
    batch = make_batch(tok, ["Hi"], PRM_TEXTS, 2)
    ctx = ScoringContext(batch=batch, rows=[PRM_ROW], task=SimpleNamespace(name="arithmetic", verifier=MathVerifier()),
                         tokenizer=tok)
    combined = score(ctx, build_pipeline(cfg).rewards)
    data = Collected(batch=batch, rows=[PRM_ROW], scores=combined.seq, token=combined.token,
                     token_mask=combined.token_mask, table=combined.table, weights=combined.weights,
                     names=list(combined.per_source), valid=torch.ones(1, 2, dtype=torch.bool))
    _, drox_adv = advantages(build_pipeline(cfg), cfg, data, 1, {})  # [2, 12]
    torch.testing.assert_close(verl_adv[[0, 2]], drox_adv.to(verl_adv.dtype), rtol=0, atol=1e-5)
