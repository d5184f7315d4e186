"""`drox sft` on the tiny model: the label mask, the loss, learning, the saved folder, data errors, determinism."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from drox.errors import ConfigError
from drox.tasks import TaskError
from drox.trainers import sft
from drox.trainers.metrics import read_metrics

IGNORE = -100
PAIRS = [  # a tiny fixed dataset
    {"prompt": "What is 4 + 4?", "response": "4 + 4 = 8\nThe answer is \\boxed{8}"},
    {"prompt": "What is 2 + 7?", "response": "2 + 7 = 9\nThe answer is \\boxed{9}"},
    {"prompt": "What is 3 + 3?", "response": "3 + 3 = 6\nThe answer is \\boxed{6}"},
    {"prompt": "What is 5 + 1?", "response": "5 + 1 = 6\nThe answer is \\boxed{6}"},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def data_file(tmp_path):
    return write_jsonl(tmp_path / "pairs.jsonl", PAIRS)


def sft_cfg(compose_cfg, *extra):
    return compose_cfg("sft.batch_size=4", "sft.lr=1e-3", *extra)


def weights(run_dir):
    return load_file(str(run_dir / "model" / "model.safetensors"))


# ------------------------------------------------------------------------------------------------ labels and loss


def test_labels_are_minus_100_exactly_on_the_prompt_and_padding():
    example, cut = sft.build_example([5, 6, 7], [8, 9], end_id=2, max_length=100)
    assert not cut
    assert example.input_ids == [5, 6, 7, 8, 9, 2]
    assert example.labels == [IGNORE, IGNORE, IGNORE, 8, 9, 2]
    # max_length cuts the end of the response (the end token first)
    example, cut = sft.build_example([5, 6, 7], [8, 9], end_id=2, max_length=5)
    assert cut and example.input_ids == [5, 6, 7, 8, 9] and example.labels == [IGNORE, IGNORE, IGNORE, 8, 9]
    # a prompt that fills max_length leaves nothing to learn: dropped
    assert sft.build_example([5, 6, 7], [8, 9], end_id=2, max_length=3) == (None, False)
    # an empty prompt: nothing predicts position 0, so it is never a label
    example, _ = sft.build_example([], [8, 9], end_id=2, max_length=100)
    assert example.labels == [IGNORE, 9, 2]
    # right padding: pad ids, mask 0, label -100
    short, _ = sft.build_example([5], [8], end_id=2, max_length=100)
    long, _ = sft.build_example([5, 6, 7], [8, 9], end_id=2, max_length=100)
    ids, mask, labels = sft.collate([short, long], pad_id=0)
    assert ids.tolist() == [[5, 8, 2, 0, 0, 0], [5, 6, 7, 8, 9, 2]]
    assert mask.tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]]
    assert labels.tolist() == [[IGNORE, 8, 2, IGNORE, IGNORE, IGNORE], [IGNORE, IGNORE, IGNORE, 8, 9, 2]]


def test_prompts_are_tokenized_as_the_rollout_engine_encodes_them_and_end_with_its_stop_token(tiny_policy,
                                                                                                tiny_cfg):
    from drox.rollout.hf import HFRolloutEngine

    model, tokenizer = tiny_policy
    engine = HFRolloutEngine(model, tokenizer, tiny_cfg.model)
    pairs = [(r["prompt"], r["response"]) for r in PAIRS[:2]]
    examples, stats = sft.tokenize_pairs(pairs, engine, max_length=1024)
    assert stats["examples"] == 2 and stats["truncated"] == stats["dropped"] == 0
    end = tokenizer.eos_token_id
    assert end in engine.eos_ids.tolist()  # the token the engine stops on ...
    assert tokenizer.convert_ids_to_tokens(end) == "<|im_end|>"  # ... is SmolLM2's chat end of turn
    for (prompt, response), example in zip(pairs, examples):
        ids, mask = engine.encode_prompts([prompt])
        prompt_ids = ids[0][mask[0].bool()].tolist()
        n = len(prompt_ids)
        assert example.input_ids[:n] == prompt_ids  # chat template included, token for token
        assert tokenizer.decode(prompt_ids).endswith("<|im_start|>assistant\n")
        assert example.labels[:n] == [IGNORE] * n
        assert IGNORE not in example.labels[n:]
        assert example.input_ids[n:] == example.labels[n:]
        assert example.input_ids[-1] == end
        assert tokenizer.decode(example.input_ids[n:-1]) == response


def test_loss_is_the_mean_over_response_tokens_of_the_batch_and_exact_under_accumulation(tiny_policy):
    import copy

    model, _ = tiny_policy
    a, _ = sft.build_example([5, 6, 7], [8, 9, 10], end_id=2, max_length=100)
    b, _ = sft.build_example([5], [11], end_id=2, max_length=100)
    ids, mask, labels = sft.collate([a, b], pad_id=0)
    n = int((labels != IGNORE).sum())
    assert n == 4 + 2
    with torch.no_grad():
        got = sft.sft_loss(model, ids, mask, labels, n)
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
    manual = [-logp[i, t - 1, labels[i, t]] for i in range(2) for t in range(ids.shape[1]) if labels[i, t] != IGNORE]
    assert torch.allclose(got, torch.stack(manual).mean(), atol=1e-5)

    # grad_accum=2 (one example per micro-batch) gives the loss and gradient of one batch of two
    from omegaconf import OmegaConf

    results = []
    for accum in (1, 2):
        m = copy.deepcopy(model)
        opt = torch.optim.SGD(m.parameters(), lr=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        cfg = OmegaConf.create({"grad_accum": accum, "max_grad_norm": 0.0})
        stats = sft.sft_step(m, opt, sched, [a, b], cfg, pad_id=0, step=1)
        results.append((stats, {name: p.grad for name, p in m.named_parameters()}))
    (s1, g1), (s2, g2) = results
    assert s1["tokens"] == s2["tokens"] == 6
    assert s1["loss"] == pytest.approx(got.item(), abs=1e-5) and s2["loss"] == pytest.approx(got.item(), abs=1e-5)
    assert s1["grad_norm"] == pytest.approx(s2["grad_norm"], rel=1e-5)
    for name, g in g1.items():
        assert torch.allclose(g, g2[name], rtol=1e-4, atol=1e-5), name  # float summation order only


# ------------------------------------------------------------------------------------------------ training runs


def test_loss_falls_every_parameter_changes_and_outputs_are_written(compose_cfg, data_file, tmp_path, tiny_policy):
    cfg = sft_cfg(compose_cfg, f"sft.data={data_file}", "sft.steps=20", "sft.warmup_steps=2", "sft.lr=5e-3")
    out = sft.run_sft(cfg, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 21))
    for key in ("loss", "tokens", "lr", "grad_norm", "examples_seen", "time/step", "time/elapsed"):
        assert key in rows[0], key
    assert rows[0]["lr"] == pytest.approx(2.5e-3) and rows[2]["lr"] == pytest.approx(5e-3)  # warm-up
    assert rows[0]["examples_seen"] == 4 and rows[-1]["epoch"] == 20
    first, last = rows[0]["loss"], rows[-1]["loss"]
    assert last < 0.6 * first, (first, last)
    assert sum(r["loss"] for r in rows[-5:]) < sum(r["loss"] for r in rows[:5])
    assert (run / "config.yaml").is_file() and "step 20/20" in (run / "sft.log").read_text()
    assert out["model_dir"] == run / "model"
    assert not [p for p in run.iterdir() if p.name.startswith(".tmp")]  # no temp folder left
    # every parameter tensor moved: the loss reaches all of them
    before, _ = tiny_policy
    after = weights(run)
    for name, p in before.named_parameters():
        if name in after:
            assert not torch.equal(p.detach(), after[name]), f"{name} did not change"
    assert "model.embed_tokens.weight" in after


def test_saved_folder_loads_as_model_hf_with_the_chat_template_and_generates_its_answer(compose_cfg, tmp_path):
    """Overfit one example: the saved model, loaded with model=hf model.path=..., writes the response and stops at
    the end token (the SFT end token is one the rollout engine stops on)."""
    from drox.models.loading import load_policy, render_prompts
    from drox.rollout.hf import build_engine

    pair = PAIRS[0]
    data = write_jsonl(tmp_path / "one.jsonl", [pair])
    cfg = compose_cfg(f"sft.data={data}", "sft.steps=60", "sft.batch_size=1", "sft.lr=1e-2")
    out = sft.run_sft(cfg, tmp_path / "run", progress=False)
    loaded_cfg = compose_cfg("model=hf", f"model.path={out['model_dir']}")
    model, tokenizer = load_policy(loaded_cfg.model)
    _, base_tokenizer = load_policy(cfg.model)
    assert render_prompts(tokenizer, [pair["prompt"]], loaded_cfg.model) == \
        render_prompts(base_tokenizer, [pair["prompt"]], cfg.model)  # same chat template
    engine = build_engine(loaded_cfg.rollout, model, tokenizer, loaded_cfg.model)
    batch = engine.generate([pair["prompt"]], 1, max_new_tokens=30, temperature=0)
    assert batch.texts[0] == pair["response"]
    assert batch.finish_reason == ["eos"]


def test_same_seed_same_weights_other_seed_other_weights(compose_cfg, tmp_path):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        cfg = sft_cfg(compose_cfg, "task.n_train=16", "sft.steps=3", "sft.batch_size=2", f"seed={seed}")
        sft.run_sft(cfg, tmp_path / name, progress=False)
        runs[name] = weights(tmp_path / name)
    assert runs["a"].keys() == runs["b"].keys()
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not all(torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])  # another data order


def test_task_split_uses_the_solution_column(compose_cfg):
    pairs, source = sft.load_pairs(compose_cfg("task.n_train=8"))
    assert len(pairs) == 8 and "solution" in source
    prompt, response = pairs[0]
    assert prompt.startswith("What is ") and response.endswith("}") and "The answer is \\boxed{" in response


def test_response_suffix_teaches_a_stated_confidence():
    """experiments/base_policy_conf: the prompt asks for a confidence and every target states one of 0.1 ... 0.9
    after its answer, drawn per example by a seeded generator, parseable by the brier reward and drox eval's
    confidence_tag."""
    import random

    from drox.cli.main import compose
    from drox.signals.calibration import parse_confidence
    from drox.tasks.verify import extract_answer

    plain, _ = sft.load_pairs(compose(["experiment=base_policy_conf", "task.n_train=40", "sft.response_suffix=''",
                                       "sft.suffix_values=[]"]))
    cfg = compose(["experiment=base_policy_conf", "task.n_train=40"])
    pairs, source = sft.load_pairs(cfg)
    assert "<confidence>{value}</confidence>" in source and "0.9" in source
    rng = random.Random(cfg.seed)  # the documented draw: one choice per example, in order
    values = [f"0.{d}" for d in range(1, 10)]
    stated = []
    for (prompt, response), (_, before) in zip(pairs, plain):
        assert "<confidence></confidence>" in prompt and prompt.startswith("What is ")
        q = rng.choice(values)
        assert response == before + f" <confidence>{q}</confidence>"
        assert parse_confidence(response) == float(q) and extract_answer(response) == extract_answer(before)
        stated.append(q)
    assert len(set(stated)) >= 6  # varied: 40 draws from 9 values
    again, _ = sft.load_pairs(cfg)
    assert again == pairs  # same seed, same values
    other, _ = sft.load_pairs(compose(["experiment=base_policy_conf", "task.n_train=40", "seed=1"]))
    assert [r for _, r in other] != [r for _, r in pairs]


def test_response_suffixes_fill_the_placeholder_or_keep_the_suffix():
    assert sft.response_suffixes(" <c>0.5</c>", [], 3, 0) == [" <c>0.5</c>"] * 3
    assert sft.response_suffixes(" <c>{value}</c>", ["x"], 2, 7) == [" <c>x</c>", " <c>x</c>"]
    assert sft.response_suffixes("", ["a", "b"], 2, 0) == ["", ""]


# ------------------------------------------------------------------------------------------------ errors


def test_malformed_or_incomplete_jsonl_lines_are_one_line_errors_naming_file_and_line(compose_cfg, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(PAIRS[0]) + "\n" + '{"prompt": "x", "response": \n')
    with pytest.raises(TaskError) as e:
        sft.load_pairs(compose_cfg(f"sft.data={bad}"))
    assert str(e.value).startswith(f"{bad} line 2: not valid JSON") and "\n" not in str(e.value)

    write_jsonl(bad, [PAIRS[0], {"prompt": "x", "answer": "y"}])
    with pytest.raises(TaskError, match=r"line 2: missing field 'response' \(set sft.response_field"):
        sft.load_pairs(compose_cfg(f"sft.data={bad}"))
    write_jsonl(bad, [{"prompt": "x", "response": 3}])
    with pytest.raises(TaskError, match="line 1: field 'response' must be a string, got int"):
        sft.load_pairs(compose_cfg(f"sft.data={bad}"))
    # other field names
    write_jsonl(bad, [{"question": "x", "teacher": "y"}])
    pairs, _ = sft.load_pairs(compose_cfg(f"sft.data={bad}", "sft.prompt_field=question", "sft.response_field=teacher"))
    assert pairs == [("x", "y")]
    with pytest.raises(TaskError, match="sft.data: no such file"):
        sft.load_pairs(compose_cfg(f"sft.data={tmp_path}/missing.jsonl"))


def test_a_task_without_the_response_column_names_the_task_and_its_columns(compose_cfg):
    with pytest.raises(TaskError) as e:
        sft.load_pairs(compose_cfg("task=countdown", "task.n_train=4"))
    message = str(e.value)
    assert message.startswith("task 'countdown' has no column 'solution' for sft.response_field; its columns: ")
    assert "prompt" in message and "target" in message and "\n" not in message


@pytest.mark.parametrize("override, message", [
    ("sft.steps=0", "sft.steps=0 must be a positive integer"),
    ("sft.lr=0", "sft.lr=0.0 must be > 0"),
    ("sft.batch_size=-1", "sft.batch_size=-1 must be a positive integer"),
    ("sft.grad_accum=9", "sft.grad_accum=9 must be <= sft.batch_size=8"),
    ("sft.schedule=linear", "sft.schedule=linear is not allowed; choose one of: constant, cosine"),
    ("sft.max_grad_norm=-1", "sft.max_grad_norm=-1.0 must be >= 0"),
])
def test_bad_values_are_config_errors(compose_cfg, override, message):
    """Checked by drox.config.validate with every other plain value, so `drox config` catches them too."""
    from omegaconf import OmegaConf
    from typer.testing import CliRunner

    from drox.cli.main import app
    from drox.config import validate

    cfg = compose_cfg()
    key, value = override.split("=")
    OmegaConf.update(cfg, key, value)
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)
    result = CliRunner().invoke(app, ["config", "model=tiny", override])
    assert result.exit_code == 2 and message in result.output


@pytest.mark.parametrize("overrides, message", [
    (["sft.response_suffix=' <c>{value}</c>'"], "sft.response_suffix holds {value} but sft.suffix_values is empty"),
    (["sft.suffix_values=[0.1,0.9]"], "sft.suffix_values=['0.1', '0.9'] is set but sft.response_suffix has no {value}"),
])
def test_a_placeholder_without_values_or_values_without_a_placeholder_is_a_config_error(overrides, message):
    from typer.testing import CliRunner

    from drox.cli.main import app

    result = CliRunner().invoke(app, ["config", "model=tiny", *overrides])
    assert result.exit_code == 2 and message in result.output


def _drox(args, cwd):
    cmd = [sys.executable, "-m", "drox.cli.main", "sft", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=180, env=dict(os.environ))


def test_cli_bad_config_exits_2_with_one_line(tmp_path):
    out = _drox(["model=tiny", "logger.wandb_mode=disabled", "sft.steps=0", f"run_dir={tmp_path}/run"], tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines() == ["error: sft.steps=0 must be a positive integer"]
    assert not (tmp_path / "run").exists()  # stopped before anything was written


def test_cli_malformed_data_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    out = _drox(["model=tiny", "logger.wandb_mode=disabled", f"sft.data={bad}", f"run_dir={tmp_path}/run"], tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad} line 1: not valid JSON"), lines
