"""The `drox` command line (typer), with Hydra composing the config.

`drox train` hands its arguments to a ``@hydra.main`` function, so it has Hydra's full
behaviour (overrides, ``+group=option``, ``-m`` multirun sweeps, Hydra's error messages);
the other commands take typer options plus trailing Hydra overrides composed with the
compose API (DESIGN.md, "Configuration").
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from drox.config import register_configs

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
register_configs()

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="drox: RL post-training experiments for language models (train, eval, report).",
)
console = Console()
EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


def fail(message: str, code: int = 2) -> None:
    """One red line on stderr, no traceback."""
    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def load_plugins(overrides: List[str]) -> None:
    """Import the ``plugins=[...]`` of the command line before Hydra composes (their components must be
    registered, and their options stored in Hydra's ConfigStore, for ``+reward=<theirs>`` to resolve)."""
    from drox.errors import ConfigError
    from drox.plugins import import_plugins, plugins_from_overrides

    try:
        import_plugins(plugins_from_overrides(overrides))
    except ConfigError as e:
        fail(str(e))


def compose(overrides: List[str]):
    """The composed config for ``overrides``, completely validated (:func:`drox.pipeline.build_pipeline`)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from drox.errors import ConfigError
    from drox.pipeline import build_pipeline

    load_plugins(overrides)
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = hydra_compose("config", overrides=list(overrides))
        build_pipeline(cfg)
    except (HydraException, OmegaConfBaseException, ConfigError) as e:
        fail(_first_line(e))
    return cfg


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    if "Available options in" in text:  # Hydra's list of the options of a group: keep it, on one line
        head, _, rest = text.partition("Available options in")
        options = rest.split("Config search path")[0].split(":", 1)[-1].split()
        return f"{head.strip()}; available options: {', '.join(options)}"
    # Hydra chains the useful message ("Key 'foo' not in 'TrainerConfig'") as the cause
    cause = e.__cause__
    if cause is not None and str(cause).strip():
        text = f"{text.splitlines()[0]} ({str(cause).strip().splitlines()[0]})"
    return " ".join(text.splitlines()[:2])


def _parse_ks(text: str) -> List[int]:
    try:
        ks = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        fail(f"--pass-at-k '{text}': give comma-separated integers, e.g. 1,8,64")
    if not ks or ks[0] < 1:
        fail(f"--pass-at-k '{text}': every k must be >= 1")
    return ks


@app.command(context_settings=EXTRA)
def train(
    ctx: typer.Context,
    resume: Optional[Path] = typer.Option(
        None, "--resume", help="Continue the run in this folder from its last checkpoint (its config.yaml is reused; "
        "trailing key=value overrides, e.g. trainer.steps=40, still apply)."),
) -> None:
    """Train a policy: drox train [HYDRA OVERRIDES] (e.g. model=tiny +reward=variance trainer.steps=50)."""
    if resume is not None:
        return _resume(resume, list(ctx.args))
    load_plugins(list(ctx.args))
    from drox.cli.hydra_entry import hydra_train

    sys.argv = ["drox train", *ctx.args]
    hydra_train()


def _resume(run_dir: Path, overrides: List[str]) -> None:
    """Resume from the run's own resolved config: the record of what ran, not a re-composition."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from drox.config import DroxConfig
    from drox.errors import ConfigError
    from drox.pipeline import build_pipeline

    saved = run_dir / "config.yaml"
    if not saved.is_file():
        fail(f"--resume {run_dir}: no config.yaml there; pass the folder of a drox train run")
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(DroxConfig), OmegaConf.load(saved),
                              OmegaConf.from_dotlist(overrides))
        cfg.run_dir, cfg.resume = str(run_dir), True
        pipeline = build_pipeline(cfg)  # imports the run's plugins first
    except (OmegaConfBaseException, ConfigError) as e:
        fail(_first_line(e))
    from drox.cli.hydra_entry import user_errors
    from drox.trainers.loop import run_training

    with user_errors():
        run_training(cfg, run_dir, pipeline=pipeline)


@app.command(context_settings=EXTRA)
def demo(ctx: typer.Context) -> None:
    """The README demo: short GRPO run of SmolLM2-135M on 1-digit addition, pass@k before/after."""
    from drox.cli.hydra_entry import hydra_train

    sys.argv = ["drox demo", "+experiment=demo", *ctx.args]
    hydra_train()


@app.command("config", context_settings=EXTRA)
def show_config(ctx: typer.Context) -> None:
    """Print the composed config for the given overrides (validated, nothing loaded)."""
    from omegaconf import OmegaConf

    cfg = compose(ctx.args)
    typer.echo(OmegaConf.to_yaml(cfg), nl=False)  # plain: rich would wrap long values into invalid YAML


@app.command("eval", context_settings=EXTRA)
def eval_cmd(
    ctx: typer.Context,
    pass_at_k: str = typer.Option("1,4,16", "--pass-at-k", help="Comma-separated k values, e.g. 1,8,64."),
    n: Optional[int] = typer.Option(None, "--n", help="Samples per problem (default: max k)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="A checkpoint folder written by drox train."),
    samples: Optional[Path] = typer.Option(None, "--samples", help="Score a JSONL of samples {problem_id, correct} (no model)."),
    num_problems: Optional[int] = typer.Option(None, "--num-problems", help="Only the first N eval problems."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default runs/eval-<time>)."),
) -> None:
    """pass@k (unbiased, Chen et al. 2021) and maj@k of a model on a task, or of given samples."""
    from omegaconf import OmegaConf

    from drox.evaluation.passk import summarize
    from drox.evaluation.report import format_table, load_samples_jsonl, write_eval_outputs

    ks = _parse_ks(pass_at_k)
    out = out or Path("runs") / time.strftime("eval-%Y-%m-%d_%H-%M-%S")
    if n is not None and n < max(ks):
        fail(f"--n {n} is smaller than the largest k={max(ks)}; pass@k needs n >= k samples per problem")
    if samples is not None:
        if ctx.args:
            fail(f"--samples scores a file; model/task overrides make no sense with it: {' '.join(ctx.args)}")
        try:
            records = load_samples_jsonl(samples)
            summary, per_problem = summarize(records, ks)
        except ValueError as e:
            fail(str(e))
        title = f"pass@k of {samples.name}"
    else:
        overrides = list(ctx.args)
        adapter = None
        if checkpoint is not None:
            if (checkpoint / "adapter_config.json").is_file():  # a LoRA run: base model of the run + adapter
                adapter = checkpoint
            elif not (checkpoint / "config.json").is_file():
                fail(f"--checkpoint {checkpoint}: not a model folder (no config.json); pass a checkpoint-N folder")
            else:
                overrides += ["model=hf", f"model.path={checkpoint}"]
        overrides += [f"eval.pass_at_k=[{','.join(map(str, ks))}]"]
        if n is not None:
            overrides.append(f"eval.n={n}")
        if num_problems is not None:
            overrides.append(f"eval.num_problems={num_problems}")
        cfg = compose(overrides)
        if adapter is not None:
            cfg.model = OmegaConf.merge(cfg.model, _run_model_config(adapter))
        summary, per_problem, records = _eval_model(cfg, ks, n, adapter)
        title = f"{cfg.model.name} on {cfg.task.name}" + (f" ({checkpoint})" if checkpoint else "")
        from drox.atomic import atomic_write_jsonl

        atomic_write_jsonl(out / "samples.jsonl", records)
    paths = write_eval_outputs(out, summary, per_problem, ks, title=title)
    console.print(format_table(summary, ks))
    console.print(f"n={summary['n']} samples x {summary['num_problems']} problems -> {paths['summary']}")


def _run_model_config(adapter: Path):
    """The base model section of the run that wrote the LoRA checkpoint ``adapter`` (run/checkpoints/step-N)."""
    from omegaconf import OmegaConf

    run_config = adapter.parent.parent / "config.yaml"
    if not run_config.is_file():
        fail(f"--checkpoint {adapter} holds a LoRA adapter, but {run_config} (its run's config, naming the base "
             "model) is missing")
    return OmegaConf.load(run_config).model


def _eval_model(cfg, ks, n, adapter: Optional[Path] = None):
    from drox.evaluation.sampling import evaluate
    from drox.models.loading import ModelError, load_policy
    from drox.rollout.hf import build_engine
    from drox.tasks import TaskError, build_task

    try:
        task = build_task(cfg.task, split=cfg.eval.split)
        if task.verifier is None:  # before loading a model: pass@k needs a verifier
            fail(f"task '{task.name}' has no verifier, so pass@k is undefined; evaluate a verifiable task or score "
                 "samples generated elsewhere with `drox eval --samples FILE.jsonl`")
        model, tokenizer = load_policy(cfg.model, cfg.device)
        if adapter is not None:  # merge the LoRA weights into the base for sampling
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().eval()
        engine = build_engine(cfg.rollout, model, tokenizer, cfg.model)
        return evaluate(engine, task, ks, n, eval_cfg=cfg.eval)
    except (TaskError, ModelError, ValueError) as e:
        fail(str(e))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
