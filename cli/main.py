"""The `drox` command line (typer), with Hydra composing the config.

`drox train` hands its arguments to a ``@hydra.main`` function, so it has Hydra's full
behaviour (overrides, ``+group=option``, ``-m`` multirun sweeps, Hydra's error messages);
the other commands take typer options plus trailing Hydra overrides composed with the
compose API (docs/design.md "Configuration").
"""

from __future__ import annotations

import functools
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
    help="drox: RL post-training experiments for language models (train, sft, eval, report, config, demo, verl, data).",
)
console = Console()
EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}
ADDED_GROUPS = ("reward", "filter", "gate")
"""Config groups selected with ``+group=name`` (several at once); the others with ``group=name``."""


def config_groups_help() -> str:
    """The config groups and their options, read from the packaged conf/ folder (the source of truth)."""
    lines = ["Config groups (group=option; +reward/+filter/+gate add components, several at once):"]
    for group in sorted(p for p in CONF_DIR.iterdir() if p.is_dir() and not p.name.startswith("_")):
        options = sorted(f.stem for f in group.glob("*.yaml"))
        if group.name == "experiment_scale" or not options:
            continue
        prefix = "+" if group.name in ADDED_GROUPS else ""
        lines.append(f"{prefix}{group.name}: {', '.join(options)}")
    lines += ["Any key of the config is an override too (trainer.lr=1e-5). See every key and its value with "
              "`drox config OVERRIDES`; your own components: docs/plugins.md."]
    return "\n\n".join(lines)  # click re-wraps single newlines


def fail(message: str, code: int = 2) -> None:
    """One red line on stderr, no traceback (the message is printed as it is: ``[...]`` in it is not markup)."""
    from rich.markup import escape

    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
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


def compose(overrides: List[str], validate: bool = True):
    """The composed config for ``overrides``, completely validated (:func:`drox.pipeline.build_pipeline`; with
    ``validate=False`` only its keys and group options). A typo in a key or option is one line naming the nearest
    valid one (drox.cli.suggest)."""
    import yaml
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from drox.cli.suggest import (component_option_blocks, explain, moved_keys_message, option_overrides,
                                  undeclared_keys, unknown_key_message)
    from drox.errors import ConfigError
    from drox.pipeline import build_pipeline

    load_plugins(overrides)
    overrides = option_overrides(overrides)
    try:
        try:
            cfg = _hydra_compose(overrides)
        except (ValueError, TypeError) as e:  # Hydra's own check of a group override's value (`scale=0`; a
            # list, `scale=[1,2]`, fails inside Hydra with a TypeError): not a HydraException
            raise ConfigError(f"{e} (in the overrides {' '.join(overrides)}; a config group takes an option name, "
                              "e.g. scale=cpu)") from None
        undeclared = undeclared_keys(cfg, component_option_blocks())  # `+trainer.stpes=5` composes: nothing reads it
        if undeclared:
            fail(unknown_key_message(*undeclared[0]))
        moved = moved_keys_message(cfg)
        if moved:
            fail(moved)
        if validate:
            build_pipeline(cfg)
    except yaml.YAMLError as e:  # a config file of conf/ (or a user's) that is not valid YAML
        fail(" ".join(str(e).split()))
    except (HydraException, OmegaConfBaseException, ConfigError) as e:
        cause = e.__cause__
        text = f"{_first_line(e)}\n{cause if cause is not None else ''}"
        fail(explain(text, overrides, functools.partial(_keys_at, overrides)) or _first_line(e))
    return cfg


def _hydra_compose(overrides: List[str]):
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return hydra_compose("config", overrides=list(overrides))


def _keys_at(overrides: List[str], dotted: str) -> Optional[List[str]]:
    """The keys of the config node at ``dotted`` ("" the root) once the group options among ``overrides`` are
    composed (their typos aside); None when there is no such node."""
    from omegaconf import DictConfig, OmegaConf

    groups = [o for o in overrides if "=" in o and "." not in o.split("=", 1)[0]]
    try:
        cfg = _hydra_compose(groups)
    except Exception:  # a second error among the groups: name the keys of the plain config instead
        cfg = _hydra_compose([])
    node = OmegaConf.select(cfg, dotted) if dotted else cfg
    return [str(k) for k in node.keys()] if isinstance(node, DictConfig) else None


def precheck(args: List[str], validate: bool = True) -> None:
    """Compose the plain overrides of a `@hydra.main` command line once, so that a typo is drox's one line and exit 2
    instead of Hydra's block and exit 1. Sweeps (``seed=0,1``), ``hydra.*`` keys and flags are left to Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    plain = [a for a in args if "=" in a and not a.startswith("-") and not a.lstrip("+~").startswith("hydra")]
    try:
        parsed = OverridesParser.create().parse_overrides(plain)
    except HydraException:
        return  # not an override Hydra can parse: Hydra's own message follows
    compose([text for o, text in zip(parsed, plain) if not o.is_sweep_override()], validate=validate)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    if "Available options in" in text:  # Hydra's list of the options of a group: keep it, on one line
        head, _, rest = text.partition("Available options in")
        options = rest.split("Config search path")[0].split(":", 1)[-1].split()
        return f"{head.strip()}; available options: {', '.join(options)}"
    # Hydra chains the useful message ("Key 'foo' not in 'TrainerConfig'") as the cause
    cause = e.__cause__
    if cause is not None and str(cause).strip():
        from drox.errors import first_line

        return first_line(e)
    return " ".join(text.splitlines()[:2])  # Hydra's hint ("To append to your config use +...") is the 2nd line


def _parse_ks(text: str) -> List[int]:
    try:
        ks = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        fail(f"--pass-at-k '{text}': give comma-separated integers, e.g. 1,8,64")
    if not ks or ks[0] < 1:
        fail(f"--pass-at-k '{text}': every k must be >= 1")
    return ks


@app.command(context_settings=EXTRA, epilog=config_groups_help())
def train(
    ctx: typer.Context,
    resume: Optional[Path] = typer.Option(
        None, "--resume", help="Continue the run in this folder from its last checkpoint (its config.yaml is reused; "
        "trailing key=value overrides of its length, checkpoints, evaluation and logging, e.g. trainer.steps=40, "
        "still apply; others are refused)."),
) -> None:
    """Train a policy: drox train [HYDRA OVERRIDES] (e.g. model=tiny +reward=variance trainer.steps=50)."""
    if resume is not None:
        return _resume(resume, list(ctx.args))
    precheck(list(ctx.args))
    from drox.cli.hydra_entry import hydra_train
    from drox.cli.suggest import option_overrides

    sys.argv = ["drox train", *option_overrides(ctx.args)]
    hydra_train()


def _resume(run_dir: Path, overrides: List[str]) -> None:
    """Resume from the run's own resolved config: the record of what ran, not a re-composition."""
    from drox.cli.hydra_entry import user_errors
    from drox.trainers.loop import run_training

    cfg, pipeline = _run_config(run_dir, overrides, flag="--resume ", resume=True)
    cfg.run_dir, cfg.resume = str(run_dir), True
    with user_errors():
        run_training(cfg, run_dir, pipeline=pipeline, resume_overrides=overrides)


@app.command(context_settings=EXTRA)
def sft(ctx: typer.Context) -> None:
    """Supervised fine-tuning: drox sft [HYDRA OVERRIDES] (e.g. model=smollm2-135m sft.steps=200 sft.lr=5e-5)."""
    precheck(list(ctx.args), validate=False)
    from drox.cli.hydra_entry import hydra_sft

    sys.argv = ["drox sft", *ctx.args]
    hydra_sft()


@app.command(context_settings=EXTRA)
def demo(ctx: typer.Context) -> None:
    """The README demo: short GRPO run of SmolLM2-135M on 1-digit addition, pass@k before/after."""
    from drox.cli.hydra_entry import hydra_train

    sys.argv = ["drox demo", "experiment=demo", *ctx.args]
    hydra_train()


@app.command("config", context_settings=EXTRA)
def show_config(ctx: typer.Context) -> None:
    """Print the composed config for the given overrides (validated, nothing loaded)."""
    from omegaconf import OmegaConf

    cfg = compose(ctx.args)
    typer.echo(OmegaConf.to_yaml(cfg), nl=False)  # plain: rich would wrap long values into invalid YAML


EVAL_EPILOG = (
    "Calibration of a confidence the response states (RLCR, arXiv 2507.16806): "
    "\"eval.confidence_tag='<confidence>(.*?)</confidence>'\" (a regex whose first group holds q in [0,1]; "
    "verifiable tasks only) adds brier, ece, auroc, confidence_mean, accuracy_stated, confidence_format_fail_frac "
    "and calibration_n to summary.json, each sample's confidence to samples.jsonl, and reliability.png/.csv "
    "(docs/evaluation.md, Calibration)."
)
"""``drox eval --help``'s closing paragraph (one line: rich help keeps single line breaks as they are)."""


@app.command("eval", context_settings=EXTRA, epilog=EVAL_EPILOG)
def eval_cmd(
    ctx: typer.Context,
    pass_at_k: Optional[str] = typer.Option(None, "--pass-at-k", help="Comma-separated k values, e.g. 1,8,64 "
                                            "(default: eval.pass_at_k)."),
    n: Optional[int] = typer.Option(None, "--n", help="Samples per problem (default: max k)."),
    run: Optional[Path] = typer.Option(None, "--run", help="A drox train run folder: evaluate its checkpoints with "
                                       "the run's own model, task and chat template; results go into "
                                       "RUN/evals/<label>/step-N/."),
    steps: Optional[str] = typer.Option(None, "--steps", help="With --run: comma-separated steps (0 = the base "
                                        "policy before training; default: every saved checkpoint)."),
    label: Optional[str] = typer.Option(None, "--label", help="With --run: the name of this evaluation under "
                                        "RUN/evals/ (default: the overrides, or 'default')."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="A checkpoint folder written by drox train "
                                              "(its run's model, task and template are used when the run's "
                                              "config.yaml is beside it) or any HF model folder."),
    samples: Optional[Path] = typer.Option(None, "--samples", help="Score a JSONL of samples {problem_id, correct} (no model)."),
    num_problems: Optional[int] = typer.Option(None, "--num-problems", help="Only the first N eval problems."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default runs/eval-<time>; with -m the "
                                       "sweep folder)."),
) -> None:
    """pass@k (unbiased, Chen et al. 2021) and maj@k of a model, a checkpoint or a run's checkpoints on a task
    (open-ended metrics for tasks without a verifier), or of given samples; -m sweeps like drox train -m."""
    args = list(ctx.args)
    multirun = any(a in ("-m", "--multirun") for a in args)
    ks = _parse_ks(pass_at_k) if pass_at_k is not None else None
    if n is not None and ks is not None and n < max(ks):
        fail(f"--n {n} is smaller than the largest k={max(ks)}; pass@k needs n >= k samples per problem")
    if samples is not None:
        return _eval_samples(samples, ks or [1, 4, 16], args, out)
    options = []
    if ks is not None:
        options.append(f"eval.pass_at_k=[{','.join(map(str, ks))}]")
    if n is not None:
        options.append(f"eval.n={n}")
    if num_problems is not None:
        options.append(f"eval.num_problems={num_problems}")
    if run is not None:
        if checkpoint is not None or multirun:
            fail("--run evaluates the run's own checkpoints (choose them with --steps); it does not combine with "
                 "--checkpoint or -m")
        return _eval_run(run, steps, label, [*args, *options], out)
    if steps is not None or label is not None:
        fail("--steps and --label select checkpoints of a run: add --run RUN_DIR")
    overrides = [*args, *options]
    if multirun:
        if checkpoint is not None:
            overrides = ["model=hf", f"model.path={_full_model_folder(checkpoint)}", *overrides]
        if out is not None:
            overrides.append(f"hydra.sweep.dir={out}")
        load_plugins(overrides)
        from drox.cli.hydra_entry import hydra_eval

        sys.argv = ["drox eval", *overrides]
        return hydra_eval()
    out = out or Path("runs") / time.strftime("eval-%Y-%m-%d_%H-%M-%S")
    run_of_checkpoint = checkpoint.parent.parent if checkpoint is not None else None
    if checkpoint is not None and (run_of_checkpoint / "config.yaml").is_file():
        cfg = _checkpoint_config(_run_config(run_of_checkpoint, overrides)[0], checkpoint)
    else:
        if checkpoint is not None:
            overrides = ["model=hf", f"model.path={_full_model_folder(checkpoint)}", *overrides]
        cfg = compose(overrides)
    title = f"{cfg.model.name} on {cfg.task.name}" + (f" ({checkpoint})" if checkpoint else "")
    summary = _evaluate_to(cfg, out, title)
    _print_summary(summary, cfg, out)


def _eval_samples(samples: Path, ks: List[int], args: List[str], out: Optional[Path]) -> None:
    from drox.evaluation.passk import summarize
    from drox.evaluation.report import format_table, load_samples_jsonl, write_eval_outputs

    if args:
        fail(f"--samples scores a file; model/task overrides make no sense with it: {' '.join(args)}")
    out = out or Path("runs") / time.strftime("eval-%Y-%m-%d_%H-%M-%S")
    try:
        records = load_samples_jsonl(samples)
        summary, per_problem = summarize(records, ks)
    except ValueError as e:
        fail(str(e))
    paths = write_eval_outputs(out, summary, per_problem, ks, title=f"pass@k of {samples.name}")
    console.print(format_table(summary, ks))
    console.print(f"n={summary['n']} samples x {summary['num_problems']} problems -> {paths['summary']}")


def _print_summary(summary, cfg, out: Path) -> None:
    from drox.evaluation.report import format_calibration_line, format_table

    if any(key.startswith("pass@") for key in summary):
        console.print(format_table(summary, sorted(int(k) for k in cfg.eval.pass_at_k)))
    else:
        console.print(", ".join(f"{k} {v:.4g}" for k, v in summary.items() if isinstance(v, float)))
    calibration = format_calibration_line(summary)
    if calibration:
        console.print(calibration, highlight=False)
    console.print(f"n={summary['n']} samples x {summary['num_problems']} problems -> {out / 'summary.json'}")


def _evaluate_to(cfg, out: Path, title: str, step: Optional[int] = None):
    from drox.evaluation.runner import evaluate_to
    from drox.models.loading import ModelError
    from drox.tasks import TaskError

    try:
        return evaluate_to(cfg, out, title=title, step=step)
    except (TaskError, ModelError, ValueError) as e:
        fail(str(e))


def _full_model_folder(checkpoint: Path) -> Path:
    if not (checkpoint / "config.json").is_file():
        fail(f"--checkpoint {checkpoint}: not a model folder (no config.json); pass a checkpoint-N folder")
    return checkpoint


def _run_config(run_dir: Path, overrides: List[str], flag: str = "", resume: bool = False):
    """The run's own resolved config.yaml with ``overrides`` (plain key=value) on top, validated by building
    its pipeline (which imports the run's plugins): ``(cfg, pipeline)``, with ``cfg.resume`` False. Shared by
    ``--resume`` (``flag`` names the option in errors; ``resume``: refuse overrides a resumed run cannot apply,
    before anything is written) and ``drox eval --run/--checkpoint``."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from drox.cli.suggest import moved_keys_message
    from drox.config import DroxConfig, check_resume_overrides
    from drox.errors import ConfigError
    from drox.pipeline import build_pipeline

    saved = run_dir / "config.yaml"
    if not saved.is_file():
        fail(f"{flag}{run_dir}: no config.yaml there; pass the folder of a drox train run")
    bad = [o for o in overrides if "=" not in o or o.startswith(("+", "~", "-"))]
    if bad:
        fail(f"{' '.join(bad)}: a run's config takes plain key=value overrides (e.g. eval.n=64)")
    try:
        recorded = OmegaConf.merge(OmegaConf.structured(DroxConfig), _load_run_yaml(saved))
        cfg = OmegaConf.merge(recorded, OmegaConf.from_dotlist(overrides))
        if resume:
            check_resume_overrides(recorded, cfg, [o.split("=", 1)[0].strip() for o in overrides])
        cfg.resume = False
        moved = moved_keys_message(cfg)
        if moved:
            fail(f"{saved}: {moved}; this run was written by an older drox")
        pipeline = build_pipeline(cfg)
    except (OmegaConfBaseException, ConfigError) as e:
        fail(_first_line(e))
    return cfg, pipeline


def _load_run_yaml(saved: Path):
    """A run's config.yaml, or one line naming the file, line and column where it is damaged (a hand edit or a
    truncated copy; PyYAML's own error is a 40-line traceback)."""
    import yaml
    from omegaconf import DictConfig, OmegaConf

    fix = "fix it by hand (`drox config` prints a whole config to compare with) or start a new run"
    try:
        loaded = OmegaConf.load(saved)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        start = getattr(e, "context_mark", None)  # where the unclosed bracket or quote began: usually the mistake
        if getattr(e, "context", None) and start is not None:
            what += f", {e.context} at line {start.line + 1}, column {start.column + 1}"
        fail(f"{saved}{where}: not valid YAML ({what}); {fix}")
    except (UnicodeDecodeError, OSError) as e:
        fail(f"{saved}: cannot read ({e}); {fix}")
    if not isinstance(loaded, DictConfig):
        fail(f"{saved}: not a mapping of config keys (a YAML list); {fix}")
    return loaded


def _checkpoint_config(cfg, checkpoint: Path):
    """``cfg`` (a run's) pointed at one of its checkpoints: a full model becomes ``model.name=hf`` with the
    run's chat-template settings kept; a LoRA adapter stays on the run's base model (``eval.checkpoint``)."""
    cfg = cfg.copy()
    cfg.eval.checkpoint = str(checkpoint)
    if not (checkpoint / "adapter_config.json").is_file():
        cfg.model.name, cfg.model.path = "hf", str(_full_model_folder(checkpoint))
    return cfg


def _eval_run(run_dir: Path, steps_text: Optional[str], label: Optional[str], overrides: List[str],
              out: Optional[Path]) -> None:
    """Evaluate steps of a run into RUN/evals/<label>/step-N/ and overlay their pass@k curves."""
    base, _ = _run_config(run_dir, overrides)
    available = {int(p.name.split("-")[1]): p for p in sorted((run_dir / "checkpoints").glob("step-*"))
                 if p.name.split("-")[1].isdigit() and (p / "trainer_state.pt").is_file()}
    if steps_text is None:
        chosen = sorted(available)
        if not chosen:
            fail(f"--run {run_dir}: no checkpoints saved; pass --steps 0 for the base policy or train with "
                 "trainer.save_every")
    else:
        try:
            chosen = sorted({int(x) for x in steps_text.split(",") if x.strip()})
        except ValueError:
            fail(f"--steps '{steps_text}': give comma-separated step numbers, e.g. 0,20")
        missing = [s for s in chosen if s != 0 and s not in available]
        if missing:
            fail(f"--run {run_dir}: no checkpoint for step(s) {missing}; saved: {sorted(available) or 'none'}")
    label = label or (",".join(overrides).replace("/", "_") if overrides else "default")
    root = out or run_dir / "evals" / label
    results = {}
    for step in chosen:
        cfg = base if step == 0 else _checkpoint_config(base, available[step])
        console.print(f"step {step}: {'base policy' if step == 0 else available[step]}")
        results[step] = _evaluate_to(cfg, root / f"step-{step:06d}", f"{run_dir.name} step {step}", step)
        _print_summary(results[step], cfg, root / f"step-{step:06d}")
    if len(results) > 1 and any(k.startswith("pass@") for k in results[chosen[-1]]):
        from drox.evaluation.curves import write_step_comparison

        text = write_step_comparison(root, results)
        console.print(text, highlight=False)


VERL_EPILOG = (
    "Runs the experiment on verl 0.9.1 (Ray, FSDP, vLLM; one GPU node or a cluster): the drox config is composed and "
    "checked as for drox train, its task exported to parquet, and verl launched with drox's estimators, reward "
    "manager and filters; a component verl cannot run stops with one line naming it. Needs pip install 'drox\\[verl]' "
    "(see docs/verl.md), except --dry-run's command."
)


@app.command("verl", context_settings=EXTRA, epilog=VERL_EPILOG)
def verl_cmd(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the verl command (and, where verl 0.9.1 is "
                                 "installed, its resolved config) and exit; nothing is written or started."),
    submit: Optional[str] = typer.Option(None, "--submit", help="ray job submit to the Ray cluster whose dashboard "
                                         "is at this address (e.g. http://head:8265) instead of running here."),
    nnodes: int = typer.Option(1, "--nnodes", help="Nodes of the Ray cluster (trainer.nnodes)."),
    gpus_per_node: int = typer.Option(1, "--gpus-per-node", help="GPUs per node (trainer.n_gpus_per_node)."),
    rollout_tp: int = typer.Option(1, "--rollout-tp", help="GPUs per vLLM replica (tensor parallel size)."),
    verl_arg: List[str] = typer.Option([], "--verl-arg", help="A verl Hydra override passed on as it is, after "
                                       "drox's (repeatable), e.g. --verl-arg data.max_prompt_length=2048."),
) -> None:
    """Train on verl: drox verl [HYDRA OVERRIDES] [--dry-run] (e.g. model=hf model.path=Qwen/Qwen2.5-0.5B-Instruct)."""
    from drox.errors import ConfigError
    from drox.integrations.verl.cli import verl_command
    from drox.integrations.verl.launch import Topology
    from drox.models.loading import ModelError
    from drox.tasks import TaskError

    cfg = compose(list(ctx.args))
    try:
        code = verl_command(cfg, dry_run=dry_run, submit=submit, topology=Topology(nnodes, gpus_per_node, rollout_tp),
                            verl_args=list(verl_arg), echo=typer.echo)
    except (ConfigError, TaskError, ModelError) as e:
        fail(_first_line(e))
    raise typer.Exit(code)


from drox.cli.report_cmd import report  # noqa: E402  (cheap: its heavy imports are inside the command)

app.command("report")(report)


@app.command("data")
def data(
    name: Optional[str] = typer.Argument(None, help="The data set to write (drox data --list shows them)."),
    out: Path = typer.Option(Path("data"), "--out", help="Folder that receives <name>/train.jsonl, test.jsonl and "
                             "source.json (the <name> folder is replaced whole)."),
    list_sets: bool = typer.Option(False, "--list", help="Print each data set: where it comes from, its splits and "
                                   "fields; nothing is written."),
    from_files: Optional[Path] = typer.Option(
        None, "--from-files", help="Read a local copy instead of downloading: a folder holding <split>.jsonl (or "
        ".json / .parquet) per split (train, test), with the source's own field names."),
) -> None:
    """Write a data set as JSONL for task=jsonl: drox data gsm8k --out data/ (needs a network, or --from-files)."""
    from drox.cli.data_cmd import listing, write
    from drox.tasks import TaskError

    if list_sets:
        typer.echo("\n".join(listing()))
        return
    try:
        write(name, out, from_files, echo=typer.echo)
    except TaskError as e:
        fail(str(e))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
