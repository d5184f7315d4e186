"""drox.integrations.verl without verl (the main suite): imports stay verl-free, the version gate, the estimator
adapters against hand-computed numbers, the rule rewards, the parquet export, the drox config -> verl launch
translation (golden command) and one-line refusals of what verl cannot run. What needs verl itself is in
tests/verl_suite (``make test-verl``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY_OVERRIDES

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden" / "verl_launch.txt"
HF = ["model=hf", "model.path=Qwen/Qwen2.5-0.5B-Instruct"]
"""A hub id: kept as it is in the plan (verl's workers download it), so nothing here needs the model."""


# ------------------------------------------------------------------------------------------------ imports, versions


def test_import_drox_and_the_integration_do_not_import_verl(tmp_path):
    code = ("import sys, drox, drox.integrations.verl as v; "
            "print('verl' in sys.modules, 'ray' in sys.modules, 'torch' in sys.modules, v.SUPPORTED_VERL)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "False", "0.9.1"]


def test_the_rule_rewards_and_the_options_they_share_import_without_torch(tmp_path):
    """A verl reward worker parses drox's own PRM options and checks steps with drox's own checker, with no torch."""
    code = ("import sys; import drox.integrations.verl.rules, drox.signals.prm; "
            "print('torch' in sys.modules, drox.integrations.verl.rules.AGGREGATIONS is drox.signals.prm.AGGREGATIONS)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]


def test_the_verl_free_modules_import_without_verl(tmp_path):
    code = ("import sys; import drox.integrations.verl.estimators, drox.integrations.verl.rules, "
            "drox.integrations.verl.export, drox.integrations.verl.launch, drox.integrations.verl.cli; "
            "print('verl' in sys.modules, 'ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


def test_check_versions_accepts_only_the_supported_release(monkeypatch):
    import drox.integrations.verl as integration
    from drox.errors import ConfigError

    monkeypatch.setattr(integration, "installed_verl_version", lambda: "0.9.1")
    assert integration.check_versions() == "0.9.1"
    monkeypatch.setattr(integration, "installed_verl_version", lambda: "0.10.0")
    with pytest.raises(ConfigError) as e:
        integration.check_versions()
    assert str(e.value) == ("verl 0.10.0 is installed, but drox.integrations.verl supports verl==0.9.1 only (its "
                            "trainer hooks change between releases): pip install 'verl[verl-core]==0.9.1'")
    monkeypatch.setattr(integration, "installed_verl_version", lambda: None)
    with pytest.raises(ConfigError) as e:
        integration.check_versions()
    assert "\n" not in str(e.value) and str(e.value).startswith("verl is not installed in this environment; the verl "
                                                                 "backend needs verl==0.9.1: pip install 'drox[verl]'")


def test_the_plugin_entry_point_and_extra_are_declared():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["verl.plugins"] == {"drox": "drox.integrations.verl.register"}
    assert project["optional-dependencies"]["verl"] == ["verl[verl-core]==0.9.1"]


# ------------------------------------------------------------------------------------------------ estimators


def test_group_rows_orders_groups_by_first_appearance():
    from drox.integrations.verl.estimators import group_rows

    rows, valid = group_rows(["b", "a", "b"], 3)
    assert rows.tolist() == [[0, 2], [1, -1]]
    assert valid.tolist() == [[True, True], [True, False]]
    with pytest.raises(ValueError, match="group ids"):
        group_rows(None, 3)


def _sparse(scores, lengths, T=4):
    """token_level_rewards [B, T] with each score on its response's last token, and the response mask."""
    rewards, mask = torch.zeros(len(scores), T), torch.zeros(len(scores), T)
    for i, (s, n) in enumerate(zip(scores, lengths)):
        mask[i, :n] = 1
        rewards[i, n - 1] = s
    return rewards, mask


def test_sign_selective_estimators_by_hand():
    """PSR / NSR / W-REINFORCE (arXiv 2506.01347 Eqs. 3, 4, 9): the advantage is a fixed value per verdict, on
    every valid token, no baseline; rows 0 and 2 are correct (reward 1), rows 1 and 3 are not."""
    from drox.integrations.verl.estimators import nsr, psr, w_reinforce

    rewards, mask = _sparse([1.0, 0.0, 1.0, 0.0], [2, 3, 1, 4])
    index = ["a", "a", "b", "b"]
    adv, ret = psr(rewards, mask, index, None)
    assert adv.tolist() == [[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert torch.equal(adv, ret)
    adv, _ = nsr(rewards, mask, index, None)
    assert adv.tolist() == [[0, 0, 0, 0], [-1, -1, -1, 0], [0, 0, 0, 0], [-1, -1, -1, -1]]
    config = {"drox": {"lam": 0.25, "scale": 2.0}}  # W-REINFORCE λ = 0.25, source weight 2
    adv, _ = w_reinforce(rewards, mask, index, config)
    assert adv.tolist() == [[0.5, 0.5, 0, 0], [-2, -2, -2, 0], [0.5, 0, 0, 0], [-2, -2, -2, -2]]
    # ±1 rewards (outcome.incorrect=-1): correct means above algorithm.drox.correct_above (0.5)
    rewards, mask = _sparse([1.0, -1.0], [1, 1], T=1)
    adv, _ = w_reinforce(rewards, mask, ["a", "a"], None)
    assert adv.flatten().tolist() == pytest.approx([0.1, -1.0])


def test_grpo_dense_by_hand():
    """DeepSeekMath §4.1.3 on interleaved groups. Group a (rows 0, 2): step rewards 0.5 (row 0, t=1), 1 (row 0, its
    last token t=2) and 0 (row 2's last token t=1, counted although 0): mean 0.5, unbiased std 0.5, normalised
    0, +1, -1; reward-to-go: row 0 = [1, 1, 1, 0], row 2 = [-1, -1, 0, 0]. Group b (rows 1, 3): two step rewards
    of 1, no contrast -> 0."""
    from drox.integrations.verl.estimators import grpo_dense

    rewards = torch.tensor([[0.0, 0.5, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    adv, ret = grpo_dense(rewards, mask, ["a", "b", "a", "b"], None)
    z = 0.5 / (0.5 + 1e-6)  # (r - mean) / (std + eps)
    expected = [[z, z, z, 0], [0, 0, 0, 0], [-z, -z, 0, 0], [0, 0, 0, 0]]
    torch.testing.assert_close(adv, torch.tensor(expected), rtol=1e-6, atol=1e-7)
    assert torch.equal(adv, ret)


def test_grpo_dense_with_one_reward_per_row_is_grpo():
    """Sparse outcome rewards only: the dense estimator gives drox's GRPO advantage on every valid token."""
    from drox.integrations.verl.estimators import grpo_dense
    from drox.trainers.algos import grpo_advantages

    scores = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    rewards, mask = _sparse(scores, [2, 4, 1, 3, 2, 2])
    adv, _ = grpo_dense(rewards, mask, ["a", "a", "a", "b", "b", "c"], None)
    a = grpo_advantages(torch.tensor([[1.0, 0.0, 0.0]]))[0]  # group a: (1 - 1/3) / std etc.
    assert adv[0, :2].tolist() == pytest.approx([a[0].item()] * 2) and adv[0, 2:].abs().sum() == 0
    assert adv[1].tolist() == pytest.approx([a[1].item()] * 4)
    assert a[0].item() == pytest.approx((2 / 3) / ((1 / 3) ** 0.5 + 1e-6))  # mean 1/3, unbiased std sqrt(1/3)
    assert adv[3:].abs().sum() == 0  # group b all equal, group c a singleton: no contrast


# ------------------------------------------------------------------------------------------------ trainer side


def test_dvao_and_the_entropy_mask_on_verl_rows_by_hand():
    """DVAO (arXiv 2605.25604) on group a = rows 0, 2, 4 (outcome 1, 0, 0 weight 1; format 1, 1, 0 weight 0.5):
    μ = (1/3, 2/3), population σ = (√(2/9), √(2/9)), Σ b σ = 1.5·√2/3 = √2/2;
    A = (1·(2/3) + 0.5·(1/3), 1·(-1/3) + 0.5·(1/3), 1·(-1/3) + 0.5·(-2/3)) / (√2/2) = (1.1785, -0.2357, -0.9428).
    Group b (rows 1, 3) has equal objectives: 0. Then the 80/20 mask with ρ = 0.4 over the 11 valid tokens keeps
    ceil(4.4) = 5, the highest entropies."""
    from drox.integrations.verl.advantage import TrainerSide, objective_table, trainer_side_advantages

    spec = TrainerSide.from_config({"trainer": {"combine": "dvao", "objectives": ["outcome", "format"],
                                                "weights": [1.0, 0.5], "entropy": {"rho": 0.4}}})
    assert spec.multi_objective and spec.active
    extra = [{"reward_extra_info": {"outcome": o, "format": f, "acc": o}}
             for o, f in [(1, 1), (1, 0), (0, 1), (1, 0), (0, 0)]]
    objectives = objective_table(extra, spec.objectives)  # [N, K]
    assert objectives.tolist() == [[1, 1], [1, 0], [0, 1], [1, 0], [0, 0]]
    mask = torch.tensor([[1.0, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 1]])
    entropy = torch.tensor([[0.9, 0.1, 5.0], [0.2, 0.3, 0.4], [0.8, 5.0, 5.0], [0.05, 0.7, 5.0], [0.6, 0.0, 0.1]])
    verl_adv = torch.full((5, 3), 7.0)  # what verl's estimator wrote: replaced
    adv, new_mask, metrics = trainer_side_advantages(spec, ["a", "b", "a", "b", "a"], mask, verl_adv, objectives,
                                                     entropy)
    r = 2 ** 0.5 / 2
    a0, a2, a4 = (2 / 3 + 0.5 / 3) / r, (-1 / 3 + 0.5 / 3) / r, (-1 / 3 - 1 / 3) / r
    assert (a0, a2, a4) == pytest.approx((1.178511, -0.235702, -0.942809), abs=1e-6)
    expected = torch.tensor([[a0, a0, 0], [0, 0, 0], [a2, 0, 0], [0, 0, 0], [a4, a4, a4]])
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-6)
    # kept: 0.9 (row 0), 0.8 (row 2), 0.7 (row 3), 0.6 (row 4), 0.4 (row 1); entropies on padding (5.0) never count
    assert new_mask.tolist() == [[1, 0, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0], [1, 0, 0]]
    assert metrics["drox/filter/entropy/n_kept"] == 5.0 and metrics["drox/advantage/weight/outcome"] > 0


def test_trainer_side_options_are_checked_in_one_line():
    from drox.errors import ConfigError
    from drox.integrations.verl.advantage import TrainerSide, objective_table

    assert not TrainerSide.from_config(None).active
    assert not TrainerSide.from_config({"trainer": {"combine": "dvao", "objectives": ["outcome"],
                                                    "weights": [1.0]}}).active  # one objective: the estimator
    for node, message in (({"combine": "mean"}, "drox.trainer.combine=mean is not allowed; choose one of: sum, dvao"),
                          ({"combine": "dvao", "objectives": ["a", "b"], "weights": [1]},
                           "drox.trainer: 2 objectives but 1 weights"),
                          ({"entropy": {"rho": 1.5}}, "drox.trainer.entropy.rho=1.5 must be in (0, 1]")):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            TrainerSide.from_config({"trainer": node})
    with pytest.raises(ConfigError, match="trajectory 1: reward_extra_info has no format"):
        objective_table([{"reward_extra_info": {"format": 1}}, {"reward_extra_info": {"acc": 1}}], ["format"])


def test_group_sigma_max_by_hand():
    """DRO's query-filter statistic max_j std_i L[i, j] (population std): rows (-1, -2) and (-3, -2) -> σ = (1, 0)."""
    from drox.integrations.verl.r3 import group_sigma_max

    assert group_sigma_max([[-1.0, -2.0], [-3.0, -2.0]]) == pytest.approx(1.0)
    assert group_sigma_max([[-1.0, -1.0], [-1.1, -1.0]]) == pytest.approx(0.05)
    assert group_sigma_max([[-1.0, -5.0]]) == 0.0  # one rollout: no spread
    with pytest.raises(ValueError, match="one reference answer gives one length"):
        group_sigma_max([[-1.0], [-1.0, -2.0]])


# ------------------------------------------------------------------------------------------------ rule rewards


def test_rule_rewards_by_hand():
    from drox.integrations.verl.rules import RewardSpec, row_of, score_response

    plain = RewardSpec()
    assert score_response("so \\boxed{8}", {"answer": "8"}, "math", plain) == (
        1.0, {"acc": 1.0, "outcome": 1.0, "format": 1.0, "verifier_timeouts": 0.0, "score": 1.0})
    dapo = RewardSpec(correct=1.0, incorrect=-1.0, format_weight=0.5)
    score, extra = score_response("it is \\boxed{7}", {"answer": "8"}, "math", dapo)
    assert (score, extra["acc"], extra["format"]) == (-0.5, 0.0, 1.0)  # -1 + 0.5 * has_box
    score, extra = score_response("no box, 8", {"answer": "8"}, "math", dapo)
    assert (score, extra["format"]) == (1.0, 0.0)  # the last number is the answer: +1, no box: +0
    row, name = row_of("10", {"drox_row": json.dumps({"numbers": [2, 3, 4], "target": 10}), "drox_verifier": "countdown"})
    assert name == "countdown" and row == {"numbers": [2, 3, 4], "target": 10, "answer": "10"}
    assert score_response("\\boxed{2*3+4}", row, name, plain)[0] == 1.0
    assert score_response("\\boxed{2*3*4}", row, name, plain)[0] == 0.0
    assert row_of("42", None) == ({"answer": "42"}, "math")  # any verl dataset: math verifier on ground_truth
    spec = RewardSpec.from_config({"verify_timeout": 2, "reward": {"outcome": {"incorrect": -1},
                                                                   "format": {"weight": 0.2}}})
    assert spec == RewardSpec(incorrect=-1.0, format_weight=0.2, verify_timeout=2.0)
    assert RewardSpec.from_config(None) == RewardSpec()


# ------------------------------------------------------------------------------------------------ PRM (rule oracle)

PRM_TEXTS = ["1+1=2\n2+2=4", "1+1=3\n3+3=6!"]
"""Two rollouts of one prompt (answer 4), two steps each, ending at characters 5 and 11: rollout 0 is right in both
steps and in its answer; rollout 1's first step is wrong (1+1=3), its second is right arithmetic (3+3=6), its answer
6 is wrong."""
PRM_ROW = {"answer": "4", "steps": ["1 + 1 = 2", "2 + 2 = 4"], "prompt": "Hi"}


class PieceTok:
    """A tokenizer of multi-character pieces: id i decodes to PIECES[i] (so a step's end is not its character index)."""

    PIECES = ["1+1=", "2", "\n", "2+2=", "4", "3", "3+3=", "6", "!"]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.PIECES[int(i)] for i in ids)


def test_prm_oracle_rule_rewards_by_hand():
    """Sequence mode: the aggregate of the step scores (1, 1) and (0, 1) times the weight joins the outcome reward,
    as drox's combiner sums them; dense mode: no sequence score, the steps as JSON with their step-end tokens."""
    from drox.errors import ConfigError
    from drox.integrations.verl.rules import (STEPS_FIELD, PRMSpec, RewardSpec, decode_steps, prm_step_scores,
                                              score_response)

    right, wrong = PRM_TEXTS
    assert prm_step_scores(wrong, PRM_ROW, PRMSpec()) == [(0.0, 5), (1.0, 11)]
    assert prm_step_scores(wrong, PRM_ROW, PRMSpec(match_reference=True)) == [(0.0, 5), (0.0, 11)]  # 6 != 4
    assert prm_step_scores(right, PRM_ROW, PRMSpec(match_reference=True, incorrect=-1.0)) == [(1.0, 5), (1.0, 11)]
    for how, agg in (("min", 0.0), ("last", 1.0), ("prod", 0.0), ("mean", 0.5)):
        spec = RewardSpec(prm=PRMSpec(enable=True, weight=0.5, aggregation=how))
        score, extra = score_response(wrong, PRM_ROW, "math", spec)
        assert (score, extra["prm"], extra["prm_aggregate"], extra["prm_steps"]) == (0.5 * agg, agg, agg, 2.0), how
        assert STEPS_FIELD not in extra
    score, extra = score_response(right, PRM_ROW, "math", RewardSpec(prm=PRMSpec(enable=True, weight=0.5)))
    assert (score, extra["acc"], extra["score"]) == (1.5, 1.0, 1.5)  # outcome 1 + 0.5 * min(1, 1)
    empty = RewardSpec(prm=PRMSpec(enable=True, empty_score=0.25))
    assert score_response("it is 4", PRM_ROW, "math", empty)[1]["prm_steps"] == 0.0
    assert score_response("it is 4", PRM_ROW, "math", empty)[0] == 1.25  # no step: empty_score
    # dense: the reward is the outcome alone; the steps' tokens under a tokenizer of pieces
    tok = PieceTok()
    ids = [0, 5, 2, 6, 7, 8]  # "1+1=" "3" "\n" "3+3=" "6" "!"
    assert tok.decode(ids) == wrong
    score, extra = score_response(wrong, PRM_ROW, "math", RewardSpec(prm=PRMSpec(enable=True, dense=True)), tok, ids)
    assert (score, extra["prm"], extra["prm_aggregate"]) == (0.0, 0.0, 0.0)  # dense: the steps are not counted twice
    assert json.loads(extra[STEPS_FIELD]) == {"score": [0.0, 1.0], "end": [5, 11], "token": [1, 4]}
    assert decode_steps(extra[STEPS_FIELD]) == [(0.0, 1), (1.0, 4)]
    assert all(not isinstance(v, str) for k, v in extra.items() if k != STEPS_FIELD)  # verl averages these
    with pytest.raises(ValueError, match="needs the tokenizer"):
        score_response(wrong, PRM_ROW, "math", RewardSpec(prm=PRMSpec(enable=True, dense=True)))
    with pytest.raises(ValueError, match="needs a 'steps' column"):
        prm_step_scores(wrong, {"answer": "4"}, PRMSpec(match_reference=True))
    with pytest.raises(ConfigError, match="drox.reward.prm.aggregation=max is not allowed; choose one of: min, last"):
        RewardSpec.from_config({"reward": {"prm": {"enable": True, "aggregation": "max"}}})
    spec = RewardSpec.from_config({"reward": {"prm": {"enable": True, "dense": True, "weight": 2}}})
    assert spec.prm == PRMSpec(enable=True, weight=2.0, dense=True)


def test_prm_spec_defaults_are_drox_s():
    from drox.integrations.verl.rules import AGGREGATIONS, PRMSpec
    from drox.rewards.prm import AGGREGATIONS as DROX_AGGREGATIONS
    from drox.rewards.prm import PRMConfig

    mine, drox_defaults = PRMSpec(), PRMConfig()
    for name in ("weight", "aggregation", "dense", "empty_score", "match_reference", "correct", "incorrect"):
        assert getattr(mine, name) == getattr(drox_defaults, name), name
    assert AGGREGATIONS == DROX_AGGREGATIONS


def _dense_rows():
    """PRM_TEXTS under CharTok (token t holds character t): steps end at tokens 4 and 10 of both rollouts."""
    return [[(1.0, 4), (1.0, 10)], [(0.0, 4), (1.0, 10)]]


def test_dense_prm_advantages_by_hand():
    """DeepSeekMath §4.1.3 in drox's trainer subclass. Group a = rows 0 and 2 (PRM_TEXTS, lengths 11 and 12), row 1
    is a group of its own without steps. The step rewards 1, 1 | 0, 1: mean 0.75, unbiased std 0.5, normalised
    +0.5, +0.5 | -1.5, +0.5; reward-to-go: row 0 = 1.0 up to its first step's token 4, then 0.5 up to token 10; row 2 =
    -1.0, then 0.5, and 0 on its token 11 after the last step. The sequence advantage verl wrote (GRPO over the
    outcomes 1, 0: ±0.5/√0.5 = ±0.7071) is added on every valid token, as drox's token_advantages adds them."""
    from drox.integrations.verl.advantage import TrainerSide, dense_step_rewards, trainer_side_advantages

    spec = TrainerSide.from_config({"reward": {"prm": {"enable": True, "dense": True, "weight": 1.0}}})
    assert spec.dense and spec.active and not spec.multi_objective
    assert not TrainerSide.from_config({"reward": {"prm": {"enable": True}}}).dense  # sequence mode: verl's own
    T = 12
    mask = torch.zeros(3, T)
    mask[0, :11], mask[1, :3], mask[2, :12] = 1, 1, 1
    seq = 0.5 / (0.5 ** 0.5 + 1e-6)
    verl_adv = torch.zeros(3, T)
    verl_adv[0, :11], verl_adv[2, :12] = seq, -seq
    rows = _dense_rows()
    adv, new_mask, metrics = trainer_side_advantages(spec, ["a", "b", "a"], mask, verl_adv,
                                                     dense_steps=[rows[0], [], rows[1]])
    z = 0.25 / (0.5 + 1e-6)  # (1 - 0.75) / (std + eps); a step of 0 gets -3z
    expected = torch.zeros(3, T)
    expected[0, :5], expected[0, 5:11] = seq + 2 * z, seq + z
    expected[2, :5], expected[2, 5:11], expected[2, 11] = -seq - 2 * z, -seq + z, -seq
    assert (2 * z, z) == pytest.approx((1.0, 0.5), abs=1e-5) and seq == pytest.approx(0.7071, abs=1e-4)
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-6)
    assert torch.equal(new_mask, mask) and metrics["drox/reward/prm/steps_placed_frac"] == 1.0
    # the source's weight scales the step rewards (a negative weight flips them); a step no token holds is not placed
    token, placed, stats = dense_step_rewards([[(1.0, 4), (0.5, None)], [(0.0, 2)]], mask[:2], weight=-2.0)
    assert token[0, 4] == -2.0 and placed.nonzero().tolist() == [[0, 4], [1, 2]]
    assert stats["drox/reward/prm/steps_placed_frac"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match=r"row 1: a step ends at response token 12, outside the responses \(T = 12\)"):
        dense_step_rewards([[], [(1.0, 12)]], mask[:2])


def test_dense_prm_advantages_equal_drox_s_own_trainer(compose_cfg):
    """The same two rollouts through drox's own trainer: the prm source (dense) and outcome scored by drox's
    combiner, then trainers/loop.advantages (GRPO + reward-to-go); the verl side: DroxRewardManager's rules per
    rollout, verl's sequence advantage (drox's GRPO, which verl's grpo equals: tests/verl_suite) and the trainer
    subclass's dense step."""
    from types import SimpleNamespace

    from doubles import CharTok, make_batch

    from drox.integrations.verl.advantage import TrainerSide, dense_steps_of, trainer_side_advantages
    from drox.integrations.verl.rules import RewardSpec, score_response
    from drox.pipeline import build_pipeline
    from drox.rewards.base import ScoringContext, score
    from drox.tasks.verify import MathVerifier
    from drox.trainers import algos
    from drox.trainers.loop import Collected, advantages

    cfg = compose_cfg("+reward=[outcome,prm]", "reward.prm.dense=true", "reward.prm.weight=0.5")
    tok = CharTok()
    batch = make_batch(tok, ["Hi"], PRM_TEXTS, 2)
    ctx = ScoringContext(batch=batch, rows=[PRM_ROW], task=SimpleNamespace(name="arithmetic", verifier=MathVerifier()),
                         tokenizer=tok)
    combined = score(ctx, build_pipeline(cfg).rewards)  # drox's parsed sources, as its trainer scores them
    data = Collected(batch=batch, rows=[PRM_ROW], scores=combined.seq, token=combined.token,
                     token_mask=combined.token_mask, table=combined.table, weights=combined.weights,
                     names=list(combined.per_source), valid=torch.ones(1, 2, dtype=torch.bool))
    _, drox_adv = advantages(build_pipeline(cfg), cfg, data, 1, {})  # [N, T]

    spec = RewardSpec.from_config({"reward": {"prm": {"enable": True, "dense": True, "weight": 0.5}}})
    scored = [score_response(text, PRM_ROW, "math", spec, tok, tok(text)["input_ids"]) for text in PRM_TEXTS]
    rm = torch.tensor([s for s, _ in scored])  # [N] reward_score: the outcome alone
    assert rm.tolist() == [1.0, 0.0]
    verl_adv = algos.broadcast_to_tokens(algos.compute_advantages(rm.view(1, 2), "grpo").view(-1),
                                         batch.response_mask)  # [N, T]
    side = TrainerSide.from_config({"trainer": {"eps": float(cfg.trainer.advantage.eps)},
                                    "reward": {"prm": {"enable": True, "dense": True, "weight": 0.5}}})
    steps = dense_steps_of([{"reward_extra_info": info} for _, info in scored])
    assert steps == _dense_rows()
    mine, _, _ = trainer_side_advantages(side, ["q", "q"], batch.response_mask, verl_adv, dense_steps=steps)
    torch.testing.assert_close(mine, drox_adv.to(mine.dtype), rtol=0, atol=1e-6)
    assert mine[0, 0].item() == pytest.approx(0.7071 + 1.0, abs=1e-4)


def test_dense_steps_must_come_from_drox_s_reward_manager():
    from drox.errors import ConfigError
    from drox.integrations.verl.advantage import dense_steps_of

    with pytest.raises(ConfigError, match="trajectory k_1_0: reward_extra_info has no drox_steps; dense step rewards "
                                          "need DroxRewardManager with drox.reward.prm.dense=true"):
        dense_steps_of([{"reward_extra_info": {"drox_steps": '{"score":[],"end":[],"token":[]}'}},
                        {"reward_extra_info": {"acc": 1.0}}], ["k_0_0", "k_1_0"])



# ------------------------------------------------------------------------------------------------ export


def test_export_is_deterministic_atomic_and_in_verls_layout(compose_cfg, tmp_path):
    import pyarrow.parquet as pq

    from drox.integrations.verl.export import export_task

    cfg = compose_cfg("task=countdown", "model.system_prompt=Be brief.")
    first = export_task(cfg, tmp_path / "a")
    second = export_task(cfg, tmp_path / "b")
    assert (first.num_train, first.num_val, first.val_is_train) == (16, 4, False)
    for name in ("train.parquet", "val.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["train.parquet", "val.parquet"]  # no temp files
    other = export_task(compose_cfg("task=countdown", "task.seed=1"), tmp_path / "c")
    assert other.train.read_bytes() != first.train.read_bytes()

    from drox.tasks import build_task

    task = build_task(cfg.task, "train")
    rows = pq.read_table(first.train).to_pylist()
    assert len(rows) == 16
    row, source = rows[3], task.dataset[3]
    assert row["data_source"] == "drox/countdown"
    assert row["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": source["prompt"]}]
    assert row["reward_model"] == {"style": "rule", "ground_truth": source["answer"]}
    info = row["extra_info"]
    assert (info["index"], info["problem_id"], info["split"], info["drox_verifier"]) == (3, "countdown-train-3", "train",
                                                                                        "countdown")
    assert json.loads(info["drox_row"])["numbers"] == source["numbers"]
    assert pq.read_table(first.val).to_pylist()[0]["extra_info"]["problem_id"] == "countdown-test-0"


def test_export_replaces_a_file_whole(compose_cfg, tmp_path, monkeypatch):
    """A write that fails half-way leaves the previous file as it was (temp file + rename)."""
    import pyarrow.parquet as pq

    from drox.integrations.verl import export

    cfg = compose_cfg()
    result = export.export_task(cfg, tmp_path)
    before = result.train.read_bytes()

    def broken(table, where, **kw):
        where.write(b"PAR1 half")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(OSError):
        export.export_task(compose_cfg("task.seed=5"), tmp_path)
    assert result.train.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.parquet", "val.parquet"]


# ------------------------------------------------------------------------------------------------ translation


def _plan(compose_cfg, tmp_path, *extra, **kw):
    from drox.integrations.verl.launch import translate

    cfg = compose_cfg(*HF, *extra)
    return translate(cfg, run_dir=tmp_path / "run", **kw)


def _overrides(plan) -> dict:
    return dict(o.split("=", 1) for o in plan.overrides)


def test_translation_of_a_grpo_run(compose_cfg, tmp_path):
    plan = _plan(compose_cfg, tmp_path, "trainer.clip_high=0.28", "trainer.lr=3e-6", "trainer.mini_batches=2")
    o = _overrides(plan)
    run = tmp_path.resolve() / "run"
    assert o["data.train_files"] == str(run / "data" / "train.parquet")
    assert (o["data.train_batch_size"], o["actor_rollout_ref.rollout.n"]) == ("2", "2")  # Q, G of TINY_OVERRIDES
    assert o["actor_rollout_ref.actor.ppo_mini_batch_size"] == "1"  # Q / mini_batches
    assert o["data.max_response_length"] == "8" and o["trainer.total_training_steps"] == "2"
    assert (o["actor_rollout_ref.actor.clip_ratio_low"], o["actor_rollout_ref.actor.clip_ratio_high"]) == ("0.2", "0.28")
    assert o["actor_rollout_ref.actor.optim.lr"] == "3e-06"
    assert o["algorithm.adv_estimator"] == "grpo" and "algorithm.norm_adv_by_std_in_grpo" in o
    assert o["actor_rollout_ref.model.path"] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert o["trainer.logger"] == "[console]" and "WANDB_MODE" not in plan.env
    assert plan.env == {"VERL_USE_EXTERNAL_MODULES": "drox.integrations.verl.register"}
    assert o["algorithm.rollout_correction.rollout_is"] == "token"  # drox's TIS cap 2.0: vLLM samples under verl


def test_translation_of_estimators_losses_and_filters(compose_cfg, tmp_path):
    o = _overrides(_plan(compose_cfg, tmp_path, "trainer.advantage.estimator=dr_grpo",
                         "trainer.loss_agg=seq-mean-token-sum-norm", "trainer.kl_coef=0.01", "+filter=dynamic_sampling"))
    assert (o["algorithm.adv_estimator"], o["algorithm.norm_adv_by_std_in_grpo"]) == ("grpo", "false")
    assert (o["actor_rollout_ref.actor.loss_agg_mode"], o["actor_rollout_ref.actor.loss_scale_factor"]) == (
        "seq-mean-token-sum-norm", "8")  # Dr. GRPO's constant: the generation budget
    assert (o["actor_rollout_ref.actor.use_kl_loss"], o["actor_rollout_ref.actor.kl_loss_type"]) == ("true",
                                                                                                     "low_var_kl")
    assert (o["algorithm.filter_groups.enable"], o["algorithm.filter_groups.metric"]) == ("true", "acc")
    o = _overrides(_plan(compose_cfg, tmp_path, "+reward=w_reinforce", "trainer.advantage.w_reinforce.lam=0.3"))
    assert (o["algorithm.adv_estimator"], o["algorithm.drox.lam"], o["algorithm.drox.scale"]) == (
        "drox_w_reinforce", "0.3", "1.0")
    o = _overrides(_plan(compose_cfg, tmp_path, "+reward=[outcome,format]", "reward.format.weight=0.5",
                         "reward.outcome.incorrect=-1", "reward.format.pattern='<answer>(.*?)</answer>'"))
    assert (o["drox.reward.outcome.incorrect"], o["drox.reward.format.weight"]) == ("-1.0", "0.5")
    assert o["drox.reward.format.pattern"] == "'<answer>(.*?)</answer>'"


def test_translation_of_the_trainer_side_components(compose_cfg, tmp_path):
    o = _overrides(_plan(compose_cfg, tmp_path, "+reward=[outcome,format]", "reward.format.weight=0.5",
                         "trainer.advantage.combine=dvao", "+filter=entropy", "filter.entropy.rho=0.3"))
    assert o["trainer.v1.trainer_mode"] == "drox_sync"
    assert (o["drox.trainer.combine"], o["drox.trainer.objectives"], o["drox.trainer.weights"]) == (
        "dvao", "[outcome,format]", "[1.0,0.5]")
    assert (o["drox.trainer.entropy.rho"], o["drox.trainer.entropy.invert"]) == ("0.3", "false")
    o = _overrides(_plan(compose_cfg, tmp_path, "+reward=outcome", "trainer.advantage.combine=dvao"))
    assert "trainer.v1.trainer_mode" not in o  # one objective: drox uses the estimator, so does verl


def test_translation_of_dro(compose_cfg, tmp_path):
    """R3 (+reward=variance) runs the drox_r3 agent loop and drox's trainer; the query filter (a threshold) drox's
    sampler, which also takes DAPO's eviction when dynamic sampling is on."""
    from drox.integrations.verl.launch import AGENT_LOOPS

    o = _overrides(_plan(compose_cfg, tmp_path, "+reward=[outcome,variance]", "reward.variance.weighting=top_p",
                         "+filter=[query,dynamic_sampling]", "filter.query.drop_fraction=0",
                         "filter.query.threshold=0.05"))
    assert o["actor_rollout_ref.rollout.agent.default_agent_loop"] == "drox_r3"
    assert o["actor_rollout_ref.rollout.agent.agent_loop_config_path"] == str(AGENT_LOOPS) and AGENT_LOOPS.is_file()
    assert (o["trainer.v1.trainer_mode"], o["drox.trainer.r3"], o["drox.trainer.estimator"]) == ("drox_sync", "true",
                                                                                                 "grpo")
    assert (o["drox.r3.weighting"], o["drox.r3.template"]) == ("top_p", "'{reasoning}\\boxed{{answer}}'")
    assert o["trainer.v1.sampler.custom_sampler.name"] == "DroxReplayBuffer"
    assert (o["trainer.v1.sampler.sampler_kwargs.sigma_threshold"], o["trainer.v1.sampler.sampler_kwargs.dapo_metric"],
            o["data.gen_batch_size"]) == ("0.05", "acc", "1")
    assert "algorithm.filter_groups.enable" not in o  # the custom sampler does DAPO's eviction
    o = _overrides(_plan(compose_cfg, tmp_path, "+filter=query", "filter.query.drop_fraction=0",
                         "filter.query.threshold=0.1"))
    assert o["actor_rollout_ref.rollout.agent.default_agent_loop"] == "drox_r3" and "drox.trainer.r3" not in o


def test_translation_of_the_prm(compose_cfg, tmp_path):
    """The rule-oracle PRM goes to DroxRewardManager (drox.reward.prm.*); dense step rewards also to drox's trainer."""
    o = _overrides(_plan(compose_cfg, tmp_path, "+reward=[outcome,prm]", "reward.prm.aggregation=last",
                         "reward.prm.weight=0.5", "reward.prm.match_reference=true"))
    assert {k: v for k, v in o.items() if k.startswith("drox.reward.prm.")} == {
        "drox.reward.prm.enable": "true", "drox.reward.prm.weight": "0.5", "drox.reward.prm.aggregation": "last",
        "drox.reward.prm.dense": "false", "drox.reward.prm.empty_score": "0.0",
        "drox.reward.prm.match_reference": "true", "drox.reward.prm.correct": "1.0", "drox.reward.prm.incorrect": "0.0"}
    assert "trainer.v1.trainer_mode" not in o  # sequence mode: the aggregate is in verl's reward
    assert (o["algorithm.adv_estimator"], o["drox.reward.outcome.weight"]) == ("grpo", "1.0")
    o = _overrides(_plan(compose_cfg, tmp_path, "+reward=prm", "reward.prm.dense=true", "trainer.advantage.eps=0.01",
                         "trainer.advantage.estimator=dr_grpo"))
    assert (o["trainer.v1.trainer_mode"], o["drox.reward.prm.dense"], o["drox.trainer.eps"]) == ("drox_sync", "true",
                                                                                                 "0.01")
    assert o["drox.reward.outcome.weight"] == "0.0"  # +reward=prm alone: the verifier only feeds acc, as in drox
    o = _overrides(_plan(compose_cfg, tmp_path, "+reward=[outcome,prm]", "trainer.advantage.combine=dvao"))
    assert (o["drox.trainer.objectives"], o["trainer.v1.trainer_mode"]) == ("[outcome,prm]", "drox_sync")


def test_dense_prm_needs_drox_s_trainer():
    from omegaconf import OmegaConf

    from drox.errors import ConfigError
    from drox.integrations.verl.resolve import check_drox_wiring

    dense = {"reward": {"prm": {"enable": True, "dense": True}}}
    check_drox_wiring(OmegaConf.create({"trainer": {"v1": {"trainer_mode": "drox_sync"}}, "drox": dense}))
    check_drox_wiring(OmegaConf.create({"trainer": {"v1": {"trainer_mode": "sync"}},
                                        "drox": {"reward": {"prm": {"enable": True}}}}))
    with pytest.raises(ConfigError, match="drox.reward.prm.dense=true needs trainer.v1.trainer_mode=drox_sync "
                                          r"\(it is sync\): only drox's trainer"):
        check_drox_wiring(OmegaConf.create({"trainer": {"v1": {"trainer_mode": "sync"}}, "drox": dense}))


def test_override_values_read_back_unchanged_by_hydra():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from drox.integrations.verl.launch import hydra_value

    parser = OverridesParser.create()
    for value in ["<answer>(.*?)</answer>", "a b", "ends with \\", "it's", "\\boxed{x}", "1e-06", "true", "plain.path"]:
        parsed = parser.parse_override(f"k={hydra_value(value)}")
        assert parsed.value() == value, (value, hydra_value(value))
    assert [hydra_value(v) for v in (True, None, 3, 0.28, ["console", "wandb"])] == [
        "true", "null", "3", "0.28", "[console,wandb]"]


def test_golden_launch_command(compose_cfg, tmp_path):
    """The whole local command for one fixed experiment; DROX_UPDATE_GOLDEN=1 rewrites the file after a deliberate
    change (review the diff)."""
    plan = _plan(compose_cfg, tmp_path, "trainer.clip_high=0.28", "+filter=dynamic_sampling",
                 "logger.wandb_mode=offline", "trainer.save_every=1", topology=None)
    text = plan.render_local().replace(str(tmp_path.resolve()), "<TMP>") + "\n"
    if os.environ.get("DROX_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()
    ray = plan.render_ray("http://head:8265")
    assert ray.startswith("ray job submit --address http://head:8265 --runtime-env-json '{\"env_vars\": "
                          "{\"VERL_USE_EXTERNAL_MODULES\": \"drox.integrations.verl.register\", \"WANDB_MODE\": "
                          "\"offline\"}}' -- python -m drox.integrations.verl.main \\\n  data.train_files=")


def test_the_embedded_model_maps_to_its_converted_folder(compose_cfg, tmp_path, drox_cache):
    from drox.integrations.verl.launch import translate

    plan = translate(compose_cfg("model=smollm2-135m"), run_dir=tmp_path)
    assert plan.embedded_model and plan.model_path == str((Path(drox_cache) / "smollm2-135m-instruct").resolve())


# ------------------------------------------------------------------------------------------------ refusals (CLI)


def _verl_cli(*args):
    from typer.testing import CliRunner

    from drox.cli.main import app

    return CliRunner().invoke(app, ["verl", *TINY_OVERRIDES, *args, "--dry-run"])


@pytest.mark.parametrize("args, message", [
    ((), "model=tiny is not supported by the verl backend: it is a random model built in memory"),
    ((*HF, "+reward=variance", "reward.variance.reward_policy=lagged"),
     "reward.variance.reward_policy=lagged is not supported by the verl backend: the lagged copy of the policy needs "
     "a reference model refreshed every k steps, which verl 0.9.1 has no API for"),
    ((*HF, "+reward=variance", "reward.variance.reward_policy=reference"),
     "reward.variance.reward_policy=reference is not supported by the verl backend: scoring under the frozen initial "
     "policy needs"),
    ((*HF, "+reward=variance", "reward.variance.masked_baseline=true"),
     "reward.variance.masked_baseline=true is not supported by the verl backend"),
    ((*HF, "task=twenty_questions"), "task=twenty_questions is not supported by the verl backend: its rollouts are "
                                     "multi-turn episodes"),
    ((*HF, "+filter=query"), "filter.query.drop_fraction=0.25 is not supported by the verl backend: verl's replay "
                             "buffer decides group by group"),
    ((*HF, "+filter=query", "filter.query.mode=offline"), "filter.query.mode=offline is not supported"),
    ((*HF, "+filter=entropy", "trainer.kl_coef=0.01"),
     "+filter=entropy with trainer.kl_coef=0.01 is not supported by the verl backend: verl applies the KL and entropy "
     "terms on the same mask"),
    ((*HF, "+filter=entropy", "filter.entropy.scope=micro_batch"),
     "filter.entropy.scope=micro_batch is not supported by the verl backend"),
    ((*HF, "+reward=[outcome,rouge]", "trainer.advantage.combine=dvao"),
     "+reward=rouge is not supported by the verl backend"),
    ((*HF, "+gate=rubric"), "+gate=rubric is not supported by the verl backend"),
    ((*HF, "+reward=prm", "reward.prm.kind=hf"),
     "reward.prm.kind=hf is not supported by the verl backend: it scores steps with a model (hf: a PRM checkpoint, "
     "generative: a judge LM, monte_carlo: the policy's completions), which needs a model server behind verl's "
     "reward loop"),
    ((*HF, "+reward=[outcome,prm]", "reward.prm.kind=monte_carlo"), "reward.prm.kind=monte_carlo is not supported"),
    ((*HF, "+reward=prm", "reward.prm.kind=generative"), "reward.prm.kind=generative is not supported"),
    ((*HF, "+reward=distill", "reward.distill.teacher=smollm2-135m"),
     "+reward=distill is not supported by the verl backend: it runs a teacher model inside the reward, and "
     "drox.integrations.verl does not have in-process model rewards yet"),
    ((*HF, "+reward=prm", "reward.prm.dense=true", "trainer.advantage.dense=per_token"),
     "trainer.advantage.dense=per_token with reward.prm.dense=true is not supported by the verl backend: drox's "
     "trainer subclass turns dense step rewards into their reward-to-go only"),
    ((*HF, "task=revise"), "task=revise without a verifier is not supported by the verl backend"),
    ((*HF, "trainer.samples_per_prompt=5", "trainer.advantage.estimator=passk"),
     "trainer.advantage.estimator=passk is not supported by the verl backend: verl 0.9.1 has no analytic pass@k "
     "advantage: its grpo_passk is Tang et al.'s best-of-group advantage (arXiv 2503.19595), another estimator "
     "(supported: dr_grpo, grpo, nsr, psr, rloo, w_reinforce)"),
    ((*HF, "trainer.samples_per_prompt=5", "trainer.advantage.estimator=pkpo"),
     "trainer.advantage.estimator=pkpo is not supported by the verl backend: verl 0.9.1 has no PKPO transformation"),
    ((*HF, "+reward=negative_only", "trainer.advantage.nsr.schedule=exp"),
     "trainer.advantage.nsr.schedule=exp is not supported by the verl backend: A-NSR's schedules are not ported to "
     "drox_nsr"),
    ((*HF, "trainer.advantage.estimator=maxrl"),
     "trainer.advantage.estimator=maxrl is not supported by the verl backend: verl 0.9.1 has no MaxRL estimator"),
    ((*HF, "--rollout-tp", "2"), "--rollout-tp=2 must divide --gpus-per-node=1"),
])
def test_what_verl_cannot_run_stops_with_one_line(args, message):
    result = _verl_cli(*args)
    assert result.exit_code == 2, result.output
    out = result.output.strip()
    assert out.startswith("error:") and "\n" not in out and "Traceback" not in out, out
    assert message in out, out


def test_dry_run_prints_the_command_without_verl(tmp_path, monkeypatch):
    import drox.integrations.verl.cli as verl_cli

    monkeypatch.setattr(verl_cli, "installed_verl_version", lambda: None)
    result = _verl_cli(*HF, f"run_dir={tmp_path}/run")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == ("# drox verl: Qwen/Qwen2.5-0.5B-Instruct on arithmetic: grpo, 2 prompts x 2 samples, 2 steps, "
                        "1 node(s) x 1 GPU(s)")
    assert "VERL_USE_EXTERNAL_MODULES=drox.integrations.verl.register python -m drox.integrations.verl.main \\" in lines
    assert lines[-1] == ("# the resolved verl config needs verl==0.9.1 (not installed here): pip install 'drox[verl]' "
                         "(verl[verl-core]==0.9.1 in its own environment; `make test-verl` builds one in .venv-verl)")
    assert not (tmp_path / "run").exists()  # a dry run writes nothing


def test_launching_without_verl_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    """The message keeps its brackets (`drox[verl]`): the CLI prints error lines as text, not rich markup."""
    import drox.integrations.verl as integration

    monkeypatch.setattr(integration, "installed_verl_version", lambda: None)
    from typer.testing import CliRunner

    from drox.cli.main import app

    result = CliRunner().invoke(app, ["verl", *TINY_OVERRIDES, *HF, f"run_dir={tmp_path}/run"])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == ("error: verl is not installed in this environment; the verl backend needs "
                                     "verl==0.9.1: pip install 'drox[verl]' (verl[verl-core]==0.9.1 in its own "
                                     "environment; `make test-verl` builds one in .venv-verl)")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------ declarations


def test_verl_support_is_declared_where_the_component_registers_and_read_without_importing_it():
    code = ("import sys, drox.pipeline\n"
            "from drox.components import ADVANTAGE_ESTIMATORS, TASKS\n"
            "from drox.rewards.base import REWARD_SOURCES\n"
            "print(TASKS.meta('twenty_questions')['verl'][:27], REWARD_SOURCES.meta('confidence')['verl'][:20],\n"
            "      ADVANTAGE_ESTIMATORS.meta('rloo')['verl'],\n"
            "      'drox.tasks.twenty_questions' in sys.modules, 'drox.rewards.confidence' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["its", "rollouts", "are", "multi-turn", "self-certainty", "needs",
                   "drox.integrations.verl.mapping:estimator", "False", "False"]


def test_a_component_without_a_verl_declaration_is_refused_generically(request):
    from dataclasses import dataclass

    from drox.integrations.verl.launch import MapContext, UnsupportedError, stage_overrides
    from drox.rewards.base import REWARD_SOURCES

    @dataclass
    class Opts:
        weight: float = 1.0
        """Weight."""

    for name, verl in (("undeclared_src", None), ("reasoned_src", "it needs X"),
                       ("mapped_src", lambda opts, ctx: ["drox.mine.w=" + str(opts.weight)])):
        request.addfinalizer(lambda n=name: REWARD_SOURCES.unregister(n))
        REWARD_SOURCES.register(name, Opts, **({} if verl is None else {"verl": verl}))(lambda ctx, cfg: None)
    ctx = MapContext(cfg=None, pipeline=None)
    with pytest.raises(UnsupportedError) as e:
        stage_overrides("+reward=undeclared_src", REWARD_SOURCES, "undeclared_src", Opts(), ctx)
    assert str(e.value) == ("+reward=undeclared_src is not supported by the verl backend: it is not ported (supported: "
                            "format, mapped_src, outcome, prm, variance)")
    with pytest.raises(UnsupportedError, match=r"^\+reward=reasoned_src is not supported by the verl backend: it needs "
                                               r"X \(supported: format, mapped_src,"):
        stage_overrides("+reward=reasoned_src", REWARD_SOURCES, "reasoned_src", Opts(), ctx)
    assert stage_overrides("+reward=mapped_src", REWARD_SOURCES, "mapped_src", Opts(2.0), ctx) == {"drox.mine.w": "2.0"}
