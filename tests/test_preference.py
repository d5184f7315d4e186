"""RLSF preference pairs and the DPO loss (trainers/preference.py): small cases computed by hand."""

import math

import pytest
import torch

from drox.trainers.preference import dpo_loss, rlsf_pairs, sequence_logps


def test_rlsf_pairs_all_ordered_pairs_above_threshold_within_each_group():
    scores = torch.tensor([[0.95, 0.5, 0.92, 0.95],   # group 0: rows 0..3
                           [0.3, 0.2, 0.1, 0.0]])      # group 1: nobody reaches 0.9
    chosen, rejected, margin = rlsf_pairs(scores, threshold=0.9)
    # row 0 (0.95) beats rows 1 (0.5) and 2 (0.92), not row 3 (a tie); row 2 (0.92) beats row 1; row 3 like row 0
    assert list(zip(chosen.tolist(), rejected.tolist())) == [(0, 1), (0, 2), (2, 1), (3, 1), (3, 2)]
    expected = [math.exp(0.45), math.exp(0.03), math.exp(0.42), math.exp(0.45), math.exp(0.03)]
    assert torch.allclose(margin, torch.tensor(expected, dtype=torch.float64))
    # a lower threshold opens group 1 (indices offset by G = 4) and gives the pairs of rows 4 > 5 > 6 > 7
    chosen, rejected, _ = rlsf_pairs(scores[1:], threshold=0.2)
    assert list(zip(chosen.tolist(), rejected.tolist())) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3)]


def test_rlsf_pairs_skip_invalid_rollouts():
    scores = torch.tensor([[0.95, 0.5, 0.1]])
    valid = torch.tensor([[True, False, True]])
    chosen, rejected, _ = rlsf_pairs(scores, threshold=0.9, valid=valid)
    assert list(zip(chosen.tolist(), rejected.tolist())) == [(0, 2)]
    with pytest.raises(ValueError, match=r"scores must be \[Q, G\]"):
        rlsf_pairs(torch.zeros(4))


def test_dpo_loss_matches_the_formula_and_its_gradient():
    logprobs = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, -0.5, -0.5]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    policy = sequence_logps(logprobs, mask).requires_grad_(True)  # [-3.0, -1.5]
    assert policy.tolist() == [-3.0, -1.5]
    ref = torch.tensor([-2.0, -2.0])
    loss, stats = dpo_loss(policy, ref, torch.tensor([1]), torch.tensor([0]), beta=0.5)
    # chosen row 1: log-ratio -1.5 + 2 = 0.5; rejected row 0: -3 + 2 = -1; logit = 0.5 * (0.5 + 1) = 0.75
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.75))))
    assert stats == {"pairs": 1.0, "reward_acc": 1.0, "reward_margin": pytest.approx(0.75)}
    loss.backward()
    sig = 1 / (1 + math.exp(-0.75))  # d/dlogit of -log σ = -(1 - σ); times β, + for chosen, - for rejected
    assert policy.grad.tolist() == pytest.approx([0.5 * (1 - sig), -0.5 * (1 - sig)])


def test_dpo_loss_without_pairs_is_zero_and_rejects_bad_beta():
    policy = torch.tensor([-1.0, -2.0], requires_grad=True)
    loss, stats = dpo_loss(policy, torch.zeros(2), torch.tensor([], dtype=torch.long),
                           torch.tensor([], dtype=torch.long))
    assert loss.item() == 0.0 and stats["pairs"] == 0.0
    loss.backward()  # attached to the graph: a step with no pairs still runs
    assert policy.grad.tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="beta > 0"):
        dpo_loss(policy, torch.zeros(2), torch.tensor([0]), torch.tensor([1]), beta=0.0)


def test_dpo_objective_trains_on_pairs_from_the_groups_scores(tmp_path):
    """objective=dpo end to end on the tiny model: pairs are logged, the loss is DPO's (log 2 at the first
    step, where the policy is the reference), the PG loss is not run, and the weights move."""
    from drox.cli.main import compose
    from drox.trainers import loop
    from drox.trainers.metrics import read_metrics

    cfg = compose(["model=tiny", "logger.wandb_mode=disabled", "trainer.steps=3", "trainer.prompts_per_step=2",
                   "trainer.samples_per_prompt=4", "rollout.max_new_tokens=6", "trainer.lr=1e-3",
                   "trainer.save_every=0", "task.n_train=40", "task.n_test=4", "eval.before_training=false",
                   "trainer.eval_every=0", "+reward=random", "trainer.objective=dpo", "trainer.dpo_threshold=0.0",
                   "trainer.dpo_beta=0.5", f"run_dir={tmp_path}"])
    from drox.models.loading import load_policy

    before = {k: v.clone() for k, v in load_policy(cfg.model)[0].state_dict().items()}
    loop.run_training(cfg, tmp_path, progress=False)
    from safetensors.torch import load_file

    after = load_file(str(tmp_path / "checkpoints" / "step-000003" / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in after)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert r["dpo/pairs"] > 0 and "pg_loss" not in r and "clip_frac" not in r
        assert r["loss"] > 0
    # step 1 starts at the reference: every log-ratio is 0, so the DPO loss is exactly log 2
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert rows[0]["dpo/reward_margin"] == pytest.approx(0.0, abs=1e-4)


def test_dpo_objective_config_errors_are_one_line(capsys):
    import typer

    from drox.cli.main import compose

    for overrides, message in (
            (["trainer.objective=dpo", "trainer.grad_accum=2"], "trainer.objective=dpo needs trainer.grad_accum=1"),
            (["trainer.objective=dpo", "trainer.dpo_beta=0"], "trainer.dpo_beta=0.0 must be > 0"),
            (["trainer.objective=ppo"], "trainer.objective=ppo is not allowed (did you mean trainer.objective=dpo?); "
                                        "choose one of: dpo, pg")):
        with pytest.raises(typer.Exit) as exc:
            compose(overrides)
        err = capsys.readouterr().err.strip()
        assert exc.value.exit_code == 2 and message in err and "\n" not in err, err
