"""pass@k of several checkpoints of one run side by side: table, overlay plot, crossover (Yue et al. 2025)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping

from drox.atomic import atomic_write_text
from drox.evaluation.passk import crossover_k

__all__ = ["passk_curve", "step_comparison_markdown", "write_step_comparison", "plot_passk_curves"]


def passk_curve(summary: Mapping[str, Any], prefix: str = "pass") -> Dict[int, float]:
    """{k: score} from a summary's ``pass@k`` keys (the ``_ci95_*`` keys are skipped)."""
    curve = {}
    for key, value in summary.items():
        head, _, k = key.partition("@")
        if head == prefix and k.isdigit():
            curve[int(k)] = float(value)
    return dict(sorted(curve.items()))


def step_comparison_markdown(results: Mapping[int, Mapping[str, Any]]) -> str:
    """A Markdown table, one row per step (pass@k with its bootstrap 95% interval), and the crossover of the
    base (step 0, or the first step given) against the last step."""
    steps = sorted(results)
    ks = sorted(passk_curve(results[steps[-1]]))
    lines = ["| step | " + " | ".join(f"pass@{k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for step in steps:
        s = results[step]
        cells = []
        for k in ks:
            low, high = s.get(f"pass@{k}_ci95_low"), s.get(f"pass@{k}_ci95_high")
            interval = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
            cells.append(f"{s[f'pass@{k}']:.3f}{interval}")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    first, last = steps[0], steps[-1]
    cross = crossover_k(passk_curve(results[first]), passk_curve(results[last]))
    n = results[last].get("n", max(ks))
    verdict = (f"none up to k = {n} (step {last} stays above step {first})" if cross is None
               else f"k = {cross} (from there on step {first} is at or above step {last})")
    lines += ["", f"Crossover, step {first} vs step {last}: {verdict}."]
    return "\n".join(lines) + "\n"


def plot_passk_curves(path: Path, curves: Mapping[str, Mapping[str, Any]], title: str) -> None:
    """One pass@k line per label on a log-2 k axis, with the bootstrap 95% band where the summary has one
    (``pass@k_ci95_low/high``); drawn with ``drox report``'s helpers (:mod:`drox.evaluation.plots`)."""
    from drox.evaluation.plots import draw_passk, format_passk_axes, new_figure, save_figure

    fig = new_figure(6.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    all_ks = set()
    for name, summary in curves.items():
        curve = passk_curve(summary)
        ks = list(curve)
        band = {k: (float(summary[f"pass@{k}_ci95_low"]), float(summary[f"pass@{k}_ci95_high"])) for k in ks
                if f"pass@{k}_ci95_low" in summary and f"pass@{k}_ci95_high" in summary}
        draw_passk(ax, ks, [curve[k] for k in ks], band, name, markersize=3)
        all_ks.update(ks)
    if all_ks:
        format_passk_axes(ax, sorted(all_ks), title)
    save_figure(fig, path)


def write_step_comparison(root: Path, results: Mapping[int, Mapping[str, Any]]) -> str:
    """``root/comparison.md`` and ``root/passk.png`` (one curve per step); returns the Markdown."""
    text = step_comparison_markdown(results)
    atomic_write_text(Path(root) / "comparison.md", text)
    plot_passk_curves(Path(root) / "passk.png", {("base (step 0)" if s == 0 else f"step {s}"): results[s]
                                                 for s in sorted(results)}, title=f"pass@k by step ({root.name})")
    return text
