"""The data sets `drox data <name>` writes as local JSONL for ``task=jsonl`` (docs/data.md).

One :class:`DataSource` per name: where the rows live (a Hugging Face hub dataset, or files of a GitHub repository
pinned at a commit), which source split becomes drox's train / test split, and which source field becomes
``prompt``, ``answer``, ``problem_id`` and ``solution``. ``source`` says where each mapping was read, so a reader can
check it. Nothing here touches the network or torch: loading and writing are in :mod:`drox.tasks.prepare`.

A field is a dotted path into a row: ``question``, or ``prompt.0.content`` / ``reward_model.ground_truth`` for the
nested rows of verl-style parquet files (a number indexes a list).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional

from .verify import _last_boxed

GITHUB = "github:"
"""Prefix of :attr:`DataSource.repo` for files of a GitHub repository (read at :attr:`DataSource.revision`)."""


@dataclass(frozen=True)
class DataSource:
    name: str
    repo: str
    """Hub dataset id, or ``github:<owner>/<repo>`` for files of that repository at :attr:`revision`."""
    splits: Mapping[str, str]
    """drox split (train / test) -> the hub split name, or the file's path in the repository (github)."""
    prompt: str
    answer: str
    id: Optional[str] = None
    """The row's own id, written as ``problem_id``; None: the source has none (drox numbers the rows)."""
    solution: Optional[str] = None
    """A worked solution, written as ``solution`` when the row has it (SFT reads it)."""
    config: Optional[str] = None
    fix_answer: Optional[Callable[[Any], Optional[str]]] = None
    """Source answer value -> the reference answer (None: the row has no usable answer and is left out)."""
    fix_prompt: Optional[Callable[[str], str]] = None
    dedupe: bool = False
    """Keep only the first row of each id (sources that repeat their rows)."""
    revision: Optional[str] = None
    """The pinned commit of a github source (hub sources record the commit they were read at)."""
    note: str = ""
    """What the mapping does beyond renaming fields (clean-ups, dropped rows), for ``--list`` and source.json."""
    source: str = ""
    """Where the id, splits and fields were read."""
    builder: str = field(default="", compare=False)
    """``json`` or ``parquet`` for github files (the ``datasets`` builder that reads them)."""

    @property
    def on_github(self) -> bool:
        return self.repo.startswith(GITHUB)

    def file_url(self, split: str) -> str:
        """The raw URL of a github source's file for drox split ``split``, at the pinned commit."""
        return f"https://raw.githubusercontent.com/{self.repo[len(GITHUB):]}/{self.revision}/{self.splits[split]}"


def get(row: Mapping[str, Any], path: str) -> Any:
    """The value at dotted ``path`` in ``row`` (a number indexes a list); None where the path does not exist."""
    value: Any = row
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, (list, tuple)) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
        if value is None:
            return None
    return value


# ---------------------------------------------------------------- answer and prompt clean-ups


def gsm8k_final(text: Any) -> Optional[str]:
    """GSM8K's answer is a worked solution ending in ``#### 1,234``: the number after the last ``####``,
    thousands separators removed."""
    if not isinstance(text, str) or "####" not in text:
        return None
    return text.rsplit("####", 1)[1].strip().replace(",", "") or None


def boxed(text: Any) -> Optional[str]:
    """The content of the last balanced ``\\boxed{...}`` of a worked solution (MATH, Minerva)."""
    return _last_boxed(text) if isinstance(text, str) else None


def plain_number(value: Any) -> Optional[str]:
    """A number as a reference answer: ``27.0`` -> ``27`` (AMC23's answers are floats); text unchanged."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip() or None


def first_unwrapped(value: Any) -> Optional[str]:
    """OlympiadBench's ``final_answer`` is a one-element list of ``$...$`` text: the element without the dollars."""
    if isinstance(value, (list, tuple)) and value:
        value = value[0]
    if not isinstance(value, str):
        return None
    return value.strip().strip("$").strip() or None


def strip_around(prefix: str, suffix: str) -> Callable[[str], str]:
    """Remove an instruction wrapper the source put around every problem (drox adds its own,
    ``task.prompt_suffix``); a prompt without exactly this wrapper is kept as it is."""

    def strip(prompt: str) -> str:
        if prompt.startswith(prefix) and prompt.endswith(suffix) and len(prompt) > len(prefix) + len(suffix):
            return prompt[len(prefix): len(prompt) - len(suffix)].strip()
        return prompt

    return strip


# The instruction DAPO-Math-17k wraps around every problem, as a public preparation script of that parquet checks it
# row by row; where a prompt does not carry exactly this wrapper it is kept whole.
DAPO_PREFIX = ("Solve the following math problem step by step. The last line of your response should be of the form "
               "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n")
DAPO_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'
BOXED_INSTRUCTION = " Let's think step by step and output the final answer within \\boxed{}."

# ---------------------------------------------------------------- the registry

ONE_SHOT = "github:ypwang61/One-Shot-RLVR"
ONE_SHOT_COMMIT = "fa0677487c8aec63f7a87a9568de4bf2c47205b4"
QWEN_EVAL = "Qwen2.5-Eval/evaluation/data"
QWEN_EVAL_SOURCE = ("ypwang61/One-Shot-RLVR: the evaluation sets of the paper (Qwen2.5-Eval/evaluation/data/<set>/"
                    "test.jsonl) and their fields as Qwen2.5-Eval/evaluation/parser.py reads them (parse_question: "
                    "the first of question/problem; parse_ground_truth)")


def _qwen_eval(name: str, folder: str, prompt: str, answer: str, id_: Optional[str], note: str,
               fix_answer=None, solution: Optional[str] = None) -> DataSource:
    return DataSource(name, ONE_SHOT, {"test": f"{QWEN_EVAL}/{folder}/test.jsonl"}, prompt, answer, id_,
                      solution=solution, fix_answer=fix_answer, revision=ONE_SHOT_COMMIT, builder="json", note=note,
                      source=QWEN_EVAL_SOURCE)


SOURCES: Dict[str, DataSource] = {s.name: s for s in [
    DataSource(
        "math", "DigitalLearningGmbH/MATH-lighteval", {"train": "train", "test": "test"}, "problem", "solution",
        solution="solution", fix_answer=boxed,
        note="answer: the last \\boxed{} of the worked solution (rows without one are left out)",
        source="volcengine/verl examples/data_preprocess/math_dataset.py (hub id, fields problem/solution, the "
               "answer taken from the last \\boxed{}; lighteval/MATH is no longer on the hub)"),
    DataSource(
        "math500", "HuggingFaceH4/MATH-500", {"test": "test"}, "problem", "answer", "unique_id", solution="solution",
        source="drox tasks/hub.py (task.hub_name=math500); the same fields in ypwang61/One-Shot-RLVR "
               "Qwen2.5-Eval/evaluation/data/math500/test.jsonl"),
    DataSource(
        "gsm8k", "openai/gsm8k", {"train": "train", "test": "test"}, "question", "answer", config="main",
        solution="answer", fix_answer=gsm8k_final,
        note="answer: the number after '####', commas removed; solution: the whole worked answer",
        source="volcengine/verl examples/data_preprocess/gsm8k.py (hub id, config main, question/answer, the "
               "'####' answer); drox tasks/hub.py"),
    DataSource(
        "deepscaler", "agentica-org/DeepScaleR-Preview-Dataset", {"train": "train"}, "problem", "answer",
        solution="solution",
        note="rows with an empty answer are left out",
        source="ypwang61/One-Shot-RLVR README.md (DSR-sub is drawn from this hub id) and data/deepscaler_dataset.py "
               "(fields problem/answer); a copy's card (WaltonFuture/DeepScaleR: problem, answer, solution; 40,315 "
               "train rows) lists the solution column, written where a row has it"),
    DataSource(
        "dapo17k", "BytedTsinghua-SIA/DAPO-Math-17k", {"train": "train"}, "prompt.0.content",
        "reward_model.ground_truth", "extra_info.index", dedupe=True,
        fix_prompt=strip_around(DAPO_PREFIX, DAPO_SUFFIX),
        note="one row per extra_info.index (the hub copy repeats each problem); DAPO's 'Answer:' instruction "
             "around each problem is removed (drox adds task.prompt_suffix)",
        source="the dataset's verl layout (prompt as chat messages, answer in reward_model.ground_truth) as "
               "AISBench's ais_bench/benchmark/configs/datasets/dapo_math/README_en.md describes it; extra_info.index "
               "and the repeats (1,791,400 rows) as the cards of copies list them (LuyiCui/DAPO-Math-17k, "
               "weijiezz/DAPO-Math-17k-split)"),
    DataSource(
        "bigmath", "SynthLabsAI/Big-Math-RL-Verified", {"train": "train"}, "problem", "answer",
        source="the dataset card (huggingface.co/datasets/SynthLabsAI/Big-Math-RL-Verified: features problem, "
               "answer, source, domain, llama8b_solve_rate; one train split)"),
    DataSource(
        "hotpotqa", "hotpotqa/hotpot_qa", {"train": "train", "test": "validation"}, "question", "answer", "id",
        config="distractor",
        note="closed book: the prompt is the question alone (the distractor paragraphs are not included); "
             "test is the validation split",
        source="tensorflow/datasets docs/community_catalog/huggingface/hotpot_qa.md (config distractor: splits "
               "train/validation, features id/question/answer/type/level/supporting_facts/context); the id "
               "hotpotqa/hotpot_qa as public code loads it (load_dataset('hotpotqa/hotpot_qa', 'distractor'))"),
    _qwen_eval("aime24", "aime24", "question", "answer", "id", note="30 problems of AIME 2024"),
    _qwen_eval("aime25", "aime25", "problem", "answer", None, note="30 problems of AIME 2025 (no ids)"),
    _qwen_eval("amc23", "amc23", "question", "answer", "id", fix_answer=plain_number,
               note="40 problems of AMC 2023; answers are floats in the source: 27.0 is written 27"),
    _qwen_eval("minerva", "minerva_math", "problem", "solution", "idx", fix_answer=boxed, solution="solution",
               note="272 problems of Minerva Math; answer: the last \\boxed{} of the solution"),
    _qwen_eval("olympiadbench", "olympiadbench", "question", "final_answer", "id", fix_answer=first_unwrapped,
               note="675 problems of OlympiadBench; answer: final_answer[0] without its $ signs"),
    DataSource(
        "dsr_sub", ONE_SHOT, {"train": "data/train/one_shot_rlvr/dsr_sub.parquet"}, "prompt.0.content",
        "reward_model.ground_truth", "extra_info.index", revision=ONE_SHOT_COMMIT, builder="parquet",
        fix_prompt=strip_around("", BOXED_INSTRUCTION),
        note="DSR-sub, the 1,209 DeepScaleR problems the paper's full-set arm trains on (one has an empty answer and is left out); the 'Let's think step by "
             "step...' instruction is removed (drox adds task.prompt_suffix)",
        source="ypwang61/One-Shot-RLVR data/train/one_shot_rlvr/dsr_sub.parquet itself at the pinned commit (1,209 "
               "rows, verl layout: prompt.0.content, reward_model.ground_truth, extra_info.index 0-1208)"),
    DataSource(
        "pi1", ONE_SHOT, {"train": "data/train/one_shot_rlvr/pi1_r128.parquet"}, "prompt.0.content",
        "reward_model.ground_truth", "extra_info.index", dedupe=True, revision=ONE_SHOT_COMMIT, builder="parquet",
        fix_prompt=strip_around("", BOXED_INSTRUCTION),
        note="the single training example pi_1 (the file repeats it 128 times; one row is written); its "
             "'Let's think step by step...' instruction is removed (drox adds task.prompt_suffix)",
        source="ypwang61/One-Shot-RLVR README.md (pi_1 and its label 12.8) and the parquet file itself (verl "
               "layout: prompt.0.content, reward_model.ground_truth, extra_info.index = 124)"),
]}


BY_HAND: Dict[str, str] = {
    "finqa": ("FinQA (czyssrs/FinQA dataset/{train,dev,test}.json: pre_text, table, post_text, qa.question, "
              "qa.exe_ans): the prompt must be assembled from the text and the table, and the format Direct Reasoning "
              "Optimization (arXiv 2506.13351) used is not known here"),
    "pararev": ("ParaRev (the hub's taln-ls2n/pararev: two JSONL files, no splits): its fields and the train/test "
                "split Direct Reasoning Optimization used are not known here; the reference revision goes in answer"),
    "guru_math": ("the math part of LLM360/guru-RL-92k (train/math__combined_54.4k.parquet, as the 80/20 authors' "
                  "script prepares it): one file of a larger hub repository, whose fields were not read here"),
    "bigmath_digits": ("mehuldamani/big-math-digits (RLCR's configs/Qwen-7B/math/RLCR.yaml): its fields were not "
                       "read here"),
}
"""Data sets a paper config names that ``drox data`` does not write (why, and where they come from): the user
writes ``data/<name>/{train,test}.jsonl`` with fields prompt and answer, and the command says so in one line."""


def known(name: str) -> Optional[DataSource]:
    return SOURCES.get(name)


def where(source: DataSource) -> str:
    """``openai/gsm8k (main)`` or ``github:owner/repo@abcdef1``: where the rows come from, in a few words."""
    if source.on_github:
        return f"{source.repo}@{source.revision[:7] if source.revision else '?'}"
    return f"{source.repo} ({source.config})" if source.config else source.repo

