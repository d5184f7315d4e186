"""`drox data`: a data set written as the JSONL files task=jsonl reads, end to end through typer's CliRunner.

No test touches the network. The end-to-end tests write small local stand-ins with the source's own column names
and run `drox data <name> --from-files <folder>`, which reads them through the same ``datasets.load_dataset``
builders ("json" / "parquet") and the same mapping and writing code as a download. The download path itself
(:func:`drox.tasks.prepare.fetch`) is tested by monkeypatching ``datasets.load_dataset`` (returning a local
Dataset, or raising the ConnectionError ``datasets`` raises offline) and :func:`drox.tasks.prepare.hub_revision`
(the hub's commit sha).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import datasets
import pytest
from typer.testing import CliRunner

from drox.cli.main import app, compose
from drox.tasks import build_task
from drox.tasks import prepare
ROOT = Path(__file__).resolve().parent.parent
from drox.tasks.catalog import BY_HAND, DAPO_PREFIX, DAPO_SUFFIX, ONE_SHOT_COMMIT, SOURCES

runner = CliRunner()

GSM8K_TRAIN = [
    {"question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
     "answer": "He has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"},
    {"question": "A farm sells 1,000 eggs a day for 3 days. How many eggs?",
     "answer": "1,000 * 3 = 3,000 eggs.\n#### 3,000"},
]
GSM8K_TEST = [{"question": "What is 2 + 2?", "answer": "2 + 2 = 4\n#### 4"}]


def _jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _invoke(*args):
    return runner.invoke(app, ["data", *[str(a) for a in args]])


def _lines(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def gsm8k_copy(tmp_path):
    folder = tmp_path / "gsm8k-copy"
    _jsonl(folder / "train.jsonl", GSM8K_TRAIN)
    _jsonl(folder / "test.jsonl", GSM8K_TEST)
    return folder


def test_gsm8k_written_end_to_end(tmp_path, gsm8k_copy):
    out = tmp_path / "data"
    result = _invoke("gsm8k", "--out", out, "--from-files", gsm8k_copy)
    assert result.exit_code == 0, result.output
    folder = out / "gsm8k"
    assert sorted(p.name for p in folder.iterdir()) == ["source.json", "test.jsonl", "train.jsonl"]
    train_text = (folder / "train.jsonl").read_text()
    # exactly the fields of task=jsonl, in this order; the answer is the number after '####' without commas
    assert train_text == (
        json.dumps({"prompt": GSM8K_TRAIN[0]["question"], "answer": "7", "solution": GSM8K_TRAIN[0]["answer"]}) + "\n"
        + json.dumps({"prompt": GSM8K_TRAIN[1]["question"], "answer": "3000", "solution": GSM8K_TRAIN[1]["answer"]})
        + "\n")
    assert [list(r) for r in _lines(folder / "train.jsonl")] == [["prompt", "answer", "solution"]] * 2
    assert _lines(folder / "test.jsonl") == [{"prompt": "What is 2 + 2?", "answer": "4",
                                                "solution": "2 + 2 = 4\n#### 4"}]

    record = json.loads((folder / "source.json").read_text())
    assert record["dataset"] == "gsm8k" and record["source"] == "openai/gsm8k" and record["config"] == "main"
    assert record["revision"] == "unknown" and record["from_files"] == str(gsm8k_copy)
    assert record["fields"] == {"prompt": "question", "answer": "answer", "problem_id": None, "solution": "answer"}
    for split, rows in (("train", 2), ("test", 1)):
        entry = record["splits"][split]
        assert entry["source_split"] == split and entry["file"] == f"{split}.jsonl"
        assert entry["rows"] == rows and entry["source_rows"] == rows
        assert entry["sha256"] == _sha256(folder / f"{split}.jsonl")
    assert f"-> {folder}" in result.output


def test_written_jsonl_builds_a_drox_task(tmp_path, gsm8k_copy):
    out = tmp_path / "data"
    assert _invoke("gsm8k", "--out", out, "--from-files", gsm8k_copy).exit_code == 0
    cfg = compose(["task=jsonl", f"task.path={out / 'gsm8k' / 'train.jsonl'}",
                   f"task.test_path={out / 'gsm8k' / 'test.jsonl'}"])
    train, test = build_task(cfg.task, "train"), build_task(cfg.task, "test")
    assert train.dataset["answer"] == ["7", "3000"] and test.dataset["answer"] == ["4"]
    assert train.dataset[0]["prompt"].startswith(GSM8K_TRAIN[0]["question"])  # + task.prompt_suffix
    assert train.dataset["solution"] == [r["answer"] for r in GSM8K_TRAIN]  # SFT's column is kept
    graded = train.verifier(["so the answer is \\boxed{7}", "\\boxed{3000}"], [train.dataset[0], train.dataset[0]])
    assert graded.correct == [True, False]


def test_nested_parquet_rows_deduplicated_by_id(tmp_path):
    """dapo17k: verl-style parquet rows (chat prompt, reward_model.ground_truth, extra_info.index), each problem
    repeated; one row per id, DAPO's instruction wrapper removed, ids kept as problem_id."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def row(index: str, problem: str, answer: str) -> dict:
        prompt = [{"content": DAPO_PREFIX + problem + DAPO_SUFFIX, "role": "user"}]
        return {"data_source": "math_dapo", "prompt": prompt,
                "ability": "MATH", "reward_model": {"ground_truth": answer, "style": "rule-lighteval/MATH_v2"},
                "extra_info": {"index": index}}

    rows = [row("a-1", "What is 6 times 7?", "42"), row("a-1", "What is 6 times 7?", "42"),
            row("b-2", "What is 10 minus 3?", "7"), row("c-3", "A problem with no answer.", "")]
    copy = tmp_path / "dapo-copy"
    copy.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), copy / "train.parquet")
    out = tmp_path / "data"
    result = _invoke("dapo17k", "--out", out, "--from-files", copy)
    assert result.exit_code == 0, result.output
    assert (out / "dapo17k" / "train.jsonl").read_text() == (
        json.dumps({"problem_id": "a-1", "prompt": "What is 6 times 7?", "answer": "42"}) + "\n"
        + json.dumps({"problem_id": "b-2", "prompt": "What is 10 minus 3?", "answer": "7"}) + "\n")
    entry = json.loads((out / "dapo17k" / "source.json").read_text())["splits"]["train"]
    assert (entry["source_rows"], entry["repeated_id"], entry["no_prompt_or_answer"], entry["rows"]) == (4, 1, 1, 2)
    cfg = compose(["task=jsonl", f"task.path={out / 'dapo17k' / 'train.jsonl'}", "task.id_field=problem_id"])
    assert build_task(cfg.task, "train").dataset["problem_id"] == ["a-1", "b-2"]


def test_download_path_reads_the_hub_at_the_commit_it_records(tmp_path, monkeypatch):
    calls = []

    def load_dataset(path, name=None, split=None, revision=None, **kwargs):
        calls.append((path, name, split, revision))
        return datasets.Dataset.from_list(GSM8K_TRAIN if split == "train" else GSM8K_TEST)

    monkeypatch.setattr(prepare, "hub_revision", lambda repo: "0123abcd" * 5)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    result = _invoke("gsm8k", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    sha = "0123abcd" * 5
    assert calls == [("openai/gsm8k", "main", "train", sha), ("openai/gsm8k", "main", "test", sha)]
    record = json.loads((tmp_path / "gsm8k" / "source.json").read_text())
    assert record["revision"] == "0123abcd" * 5 and record["from_files"] is None


def test_github_files_are_read_at_the_pinned_commit(tmp_path, monkeypatch):
    seen = {}

    def load_dataset(builder, data_files=None, split=None, **kwargs):
        seen.update(builder=builder, data_files=data_files)
        return datasets.Dataset.from_list([{"id": 0, "question": "Q?", "answer": 27.0, "url": "u", "problem": "Q?"}])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    assert _invoke("amc23", "--out", tmp_path).exit_code == 0
    assert seen["builder"] == "json"
    assert seen["data_files"] == {"test": "https://raw.githubusercontent.com/ypwang61/One-Shot-RLVR/"
                                          f"{ONE_SHOT_COMMIT}/Qwen2.5-Eval/evaluation/data/amc23/test.jsonl"}
    assert _lines(tmp_path / "amc23" / "test.jsonl") == [{"problem_id": "0", "prompt": "Q?", "answer": "27"}]
    assert json.loads((tmp_path / "amc23" / "source.json").read_text())["revision"] == ONE_SHOT_COMMIT


def test_offline_is_one_line_with_exit_2(tmp_path, monkeypatch):
    def offline(*args, **kwargs):  # what datasets raises without a network (HF_HUB_OFFLINE=1 gives the same type)
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(prepare, "hub_revision", lambda repo: None)
    monkeypatch.setattr(datasets, "load_dataset", offline)
    result = _invoke("gsm8k", "--out", tmp_path / "data")
    assert result.exit_code == 2, result.output
    out = result.output.strip()
    assert len(out.splitlines()) == 1 and out.startswith("error:") and "Traceback" not in out
    assert "drox data gsm8k" in out and "openai/gsm8k" in out
    assert "run the same command where a network exists" in out
    assert not (tmp_path / "data" / "gsm8k").exists()


def test_a_source_datasets_cannot_read_is_not_called_offline(tmp_path, monkeypatch):
    def scripted(*args, **kwargs):
        raise RuntimeError("Dataset scripts are no longer supported, but found gsm8k.py")

    monkeypatch.setattr(prepare, "hub_revision", lambda repo: None)
    monkeypatch.setattr(datasets, "load_dataset", scripted)
    result = _invoke("gsm8k", "--out", tmp_path)
    assert result.exit_code == 2
    out = result.output.strip()
    assert len(out.splitlines()) == 1 and "RuntimeError: Dataset scripts are no longer supported" in out
    assert "network" not in out


def test_unknown_name_suggests_the_nearest(tmp_path):
    result = _invoke("gsmk8", "--out", tmp_path)
    assert result.exit_code == 2
    out = result.output.strip()
    assert len(out.splitlines()) == 1 and "unknown data set 'gsmk8' (did you mean gsm8k?)" in out
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_the_previous_folder(tmp_path, gsm8k_copy):
    """The folder is replaced whole or not at all: a test split without the prompt field fails after train.jsonl
    was written, and the earlier complete folder stays as it was."""
    out = tmp_path / "data"
    assert _invoke("gsm8k", "--out", out, "--from-files", gsm8k_copy).exit_code == 0
    before = {p.name: p.read_bytes() for p in (out / "gsm8k").iterdir()}
    _jsonl(gsm8k_copy / "test.jsonl", [{"query": "What is 2 + 2?", "answer": "#### 4"}])
    result = _invoke("gsm8k", "--out", out, "--from-files", gsm8k_copy)
    assert result.exit_code == 2 and "no field 'question'" in result.output
    assert {p.name: p.read_bytes() for p in (out / "gsm8k").iterdir()} == before
    assert [p.name for p in out.iterdir()] == ["gsm8k"]  # no temp folder left behind


def test_list_names_every_set():
    result = _invoke("--list")
    assert result.exit_code == 0
    names = [line.split()[0] for line in result.output.splitlines() if line and not line.startswith(" ")]
    assert names == [*SOURCES, *BY_HAND]


def test_every_paper_config_names_a_set_drox_data_writes_or_explains(tmp_path):
    """conf/experiment_scale/*_paper.yaml read data/<name>/...; each name is in the catalog, or in BY_HAND, for
    which `drox data <name>` is one line saying why it is not written and which fields to write by hand."""
    import re

    named = set()
    for path in sorted((ROOT / "conf" / "experiment_scale").glob("*_paper.yaml")):
        named |= set(re.findall(r"data/([a-z0-9_]+)/(?:train|test)\.jsonl", path.read_text()))
    assert named and named <= set(SOURCES) | set(BY_HAND), named - set(SOURCES) - set(BY_HAND)
    assert {"dsr_sub", "pi1", "math500"} <= named
    result = _invoke("finqa", "--out", str(tmp_path))
    assert result.exit_code == 2 and not list(tmp_path.iterdir())
    line = [x for x in result.output.splitlines() if x.strip()]
    assert len(line) == 1 and "does not write 'finqa'" in line[0] and "fields prompt and answer" in line[0]


def test_catalog_entries_are_complete():
    for source in SOURCES.values():
        assert source.source and set(source.splits) <= {"train", "test"} and source.splits
        if source.on_github:
            assert len(source.revision or "") == 40 and source.builder in ("json", "parquet")
