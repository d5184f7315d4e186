"""benchmarks/results.py turns the benchmark JSON files into RESULTS.md (no benchmark runs here)."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def results(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_results", ROOT / "benchmarks" / "results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "RESULTS_DIR", tmp_path / "results")
    monkeypatch.setattr(mod, "RESULTS_MD", tmp_path / "RESULTS.md")
    monkeypatch.setattr(mod, "HERE", tmp_path)
    (tmp_path / "results").mkdir()
    return mod


def _side(median, **phases):
    return {"median_s": median, **{f"median_{k}_s": v for k, v in phases.items()},
            "per_step": {"step_s": [median] * 3, "tokens": [400, 420, 410]}}


def test_step_table_ratio_and_target(results, tmp_path):
    step = {"model": "smollm2-135m", "Q": 1, "G": 8, "max_new_tokens": 64, "steps_timed": 3, "torch": "2.13.0",
            "transformers": "5.24.0", "trl": "1.16.0", "ratio_trl_over_drox": 15.0 / 5.0,
            "drox": _side(5.0, generate=2.0, score=0.01, update=2.99),
            "trl": _side(15.0, generate=5.0, collect=5.5, update=9.5)}
    lever = {"model": "smollm2-135m", "Q": 1, "G": 8, "max_new_tokens": 64, "drox": _side(9.0, generate=4.0,
             score=0.01, update=4.99)}
    r3 = {"model": "smollm2-135m", "drox": _side(6.0, generate=2.0, score=1.5, update=2.5)}
    for name, data in (("step-smollm2-1x8", step), ("lever-none", lever), ("r3-smollm2-1x8", r3)):
        (tmp_path / "results" / f"{name}.json").write_text(json.dumps(data))
    text = results.write_results()
    assert (tmp_path / "RESULTS.md").read_text() == text
    row = next(line for line in text.splitlines() if line.startswith("| smollm2-135m | 1 x 8"))
    assert "**3.00x** | yes |" in row  # 15 / 5 >= 2.5
    assert "5.00 (2.00 / 0.01 / 2.99)" in row
    assert "| none (drox before issue 11) | 9.00 | 4.00 | 4.99 | 410 |" in text
    # R3 share: score 1.5 s added to a 4.5 s step without it = 33%
    assert "**33%**" in text and "met" in text
