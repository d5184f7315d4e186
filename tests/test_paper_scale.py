"""Paper scale from the driver: the GPU-hours estimate (experiments/paper_scale.py), computed by hand here, and
``driver.py <name> --scale paper --dry-run`` for every table (nothing loaded, nothing written)."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))

import driver  # noqa: E402
import paper_scale  # noqa: E402
from paper_scale import estimate, parameters_from_name  # noqa: E402


@pytest.mark.parametrize("name, params", [
    ("Qwen/Qwen2.5-Math-7B", 7e9), ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", 1.5e9),
    ("HuggingFaceTB/SmolLM2-135M-Instruct", 1.35e8), ("Qwen/Qwen2.5-32B", 32e9), ("Qwen/Qwen3-8B-Base", 8e9),
    ("meta-llama/Llama-3.1-8B-Instruct", 8e9), ("experiments/base_policy/model", None), ("gpt2", None),
])
def test_the_parameter_count_comes_from_the_name_or_not_at_all(name, params):
    assert parameters_from_name(name) == params


def test_the_estimate_by_hand():
    """1B parameters, 2 prompts x 4 samples, 256 prompt + 744 response tokens = 8,000 tokens a step.
    Sampling 2 x 1e9 x 8e3 = 1.6e13 FLOPs at 10% of 989.4 TFLOP/s = 0.161714 s; one forward+backward
    6 x 1e9 x 8e3 = 4.8e13 at 40% = 0.121286 s; a step 0.283000 s. With a KL term and two mini-batches two more
    forwards (reference and old policy): 8e13 at 40% = 0.202143 s, a step 0.363857 s. Evaluation: 3 problems x
    n=4 x (256 + 744) tokens x 2e9 = 2.4e13 at 10% = 0.242571 s."""
    from drox.cli.main import compose

    assert (paper_scale.H100_BF16_PEAK, paper_scale.TRAIN_MFU, paper_scale.GENERATE_MFU,
            paper_scale.PROMPT_TOKENS) == (989.4e12, 0.40, 0.10, 256)
    base = ["model=hf", "model.path=org/Some-Model-1B", "trainer.prompts_per_step=2", "trainer.samples_per_prompt=4",
            "rollout.max_new_tokens=744", "trainer.steps=10", "eval.n=4", "eval.pass_at_k=[1,4]"]
    est = estimate(compose(base, validate=False), test_problems=3)
    assert est.params == 1e9 and est.tokens_per_step == 8000
    assert est.step_seconds == pytest.approx(0.283000, abs=1e-6)
    assert est.eval_seconds == pytest.approx(0.242571, abs=1e-6) and est.eval_problems_counted
    assert est.gpu_hours == pytest.approx((10 * 0.283000 + 0.242571) / 3600, rel=1e-5)
    more = estimate(compose([*base, "trainer.kl_coef=0.1", "trainer.mini_batches=2"], validate=False), None)
    assert more.step_seconds == pytest.approx(0.363857, abs=1e-6)
    assert more.eval_problems == paper_scale.EVAL_PROBLEMS and not more.eval_problems_counted
    assert estimate(compose(["model=tiny"], validate=False)) is None  # no size in the name: no guess


PAPER_TABLES = sorted(p.parent.name for p in (ROOT / "experiments").glob("*/spec.py")
                      if (ROOT / "conf" / "experiment_scale" / f"{p.parent.name}_paper.yaml").is_file())
"""Every table with a paper-scale config (all 13 comparisons; the positive controls have none)."""


def test_every_comparison_has_a_paper_scale():
    assert len(PAPER_TABLES) == 13 and "positive_control" not in PAPER_TABLES


@pytest.mark.parametrize("name", [n if n in ("nsr", "dro") else pytest.param(n, marks=pytest.mark.tables)
                                  for n in PAPER_TABLES])
def test_a_table_dry_runs_at_paper_scale(name, capsys):
    """`make test` dry-runs two tables (about 2 s each); `make test-tables` every one."""
    driver.dry_run(name, "paper", seeds=[0])
    out = capsys.readouterr().out
    model = next(line for line in out.splitlines() if line.startswith("model: "))
    assert "experiments/" not in model and "tiny" not in model, model  # the paper's model, not a CPU base
    assert f"drox train experiment={name} scale=paper" in out or f"drox sft experiment={name}" in out
    assert f"run_dir=experiments/{name}/paper/runs/" in out
    assert "GPU-hours" in out and "not run at paper scale yet" in out


def test_a_dry_run_writes_nothing_and_bad_seeds_are_one_line(tmp_path, capsys):
    driver.dry_run("nsr", "paper", seeds=[0, 1], out=tmp_path / "table")
    assert not (tmp_path / "table").exists()
    out = capsys.readouterr().out
    assert "seed=1 run_dir=" in out and "2 seeds" in out
    with pytest.raises(SystemExit) as stop:
        driver.main(["nsr", "--scale", "paper", "--dry-run", "--seeds", "a,b"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == ("error: --seeds 'a,b': give comma-separated "
                                                                "integers, e.g. --seeds 0,1,2")


def test_the_paper_table_goes_beside_the_cpu_one():
    assert driver.table_folder("nsr") == driver.HERE / "nsr"
    assert driver.table_folder("nsr", "paper") == driver.HERE / "nsr" / "paper"
    exp = driver.at_scale(driver.load_spec("nsr"), "paper")
    assert (exp.jobs, exp.threads) == (1, None)  # sized for a GPU node, not 2 CPU cores
