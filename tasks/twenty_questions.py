"""20 Questions with a rule oracle: find a hidden item by asking yes/no questions (``task=twenty_questions``).

The multi-turn task of ΔBelief-RL (Auzina et al., "Intrinsic Credit Assignment for Long Horizon Interaction",
arXiv 2602.12342; docs/algorithms.md "ΔBelief-RL and the 20-Questions task"), made small enough for a 135M model
on a CPU. Simplified, on purpose [ENG]:

* a fixed, hand-written catalogue of 24 everyday items (:data:`CATALOGUE`) with 9 yes/no attributes
  (:data:`ATTRIBUTES`) instead of the paper's open-ended secrets;
* each problem lists ``task.n_candidates`` items (default 6, the secret among them, alphabetical) in the prompt,
  and the prompt names the attributes the oracle understands, meant to keep the game within reach of a small model
  (not measured yet on SmolLM2-135M);
* a deterministic rule :func:`oracle` answers instead of the paper's LLM judge.

Oracle rules (:func:`oracle`), on the question lower-cased with whitespace collapsed; a keyword or name matches as
a whole word or phrase, optionally followed by a plural "s" ("animals", "wheels"; not "bigger" for "big"):

1. names: if the question names exactly one catalogue item (any of its names, e.g. "plane" for airplane), the
   answer is ``"Correct! You found it."`` (the episode ends, solved) when it is the secret, else ``"No"``; naming
   two or more items is invalid ("Is it a cat or a dog?");
2. attributes: otherwise, if the keywords of exactly one attribute match, the answer is ``"Yes"`` or ``"No"`` by
   the secret's attribute ("Can it fly?", "Is it bigger than a person?");
3. anything else (no keyword, or keywords of several attributes) is ``"Invalid question. Ask one yes/no
   question."``. Negations are not parsed: "Is it not a pet?" is answered as "Is it a pet?".

The train and test splits are seeded (tasks/common.draw_split) and disjoint in candidate sets, hence in (secret,
candidate set): the prompt is a function of the set (the candidates are listed in alphabetical order).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any, Dict, FrozenSet, List, Optional, Sequence, Tuple

import datasets

from drox.components import register_task

from .common import Task, TaskError, draw_split, with_suffix
from .episodes import Reply, transcript_turns
from .verify import Verifier, VerifyResult

#: attribute -> the keywords that ask about it (the first one is named in the prompt)
ATTRIBUTES: Dict[str, Tuple[str, ...]] = {
    "animal": ("animal",),
    "mammal": ("mammal",),
    "fly": ("fly", "flies", "flying"),
    "water": ("water", "swim", "sea", "ocean"),
    "pet": ("pet",),
    "big": ("bigger than a person", "big", "large", "huge"),
    "electric": ("electric", "electricity", "electronic", "battery", "plug"),
    "food": ("food", "edible", "eat"),  # "eat": can one eat it ("Does it eat meat?" reads the same)
    "wheels": ("wheels", "wheel"),
}


@dataclass(frozen=True)
class Item:
    names: Tuple[str, ...]  # the first is its name in prompts and answers
    attributes: FrozenSet[str]  # the attributes it has (the rest it has not)

    @property
    def name(self) -> str:
        return self.names[0]


def _item(names: str, attributes: str = "") -> Item:
    return Item(tuple(names.split("|")), frozenset(attributes.split()))


CATALOGUE: Tuple[Item, ...] = (
    _item("dog", "animal mammal pet"),
    _item("cat", "animal mammal pet"),
    _item("horse", "animal mammal big"),
    _item("elephant", "animal mammal big"),
    _item("whale", "animal mammal water big"),
    _item("dolphin", "animal mammal water"),
    _item("shark", "animal water big"),
    _item("goldfish", "animal water pet"),
    _item("eagle", "animal fly"),
    _item("parrot", "animal fly pet"),
    _item("penguin", "animal water"),
    _item("frog", "animal water"),
    _item("tree", "big"),
    _item("apple", "food"),
    _item("banana", "food"),
    _item("pizza", "food"),
    _item("car", "big wheels"),
    _item("bicycle|bike", "wheels"),
    _item("airplane|plane|aeroplane", "fly big wheels"),
    _item("boat|ship", "water big"),
    _item("train", "big wheels electric"),
    _item("television|tv", "electric"),
    _item("phone|telephone", "electric"),
    _item("chair"),
)
BY_NAME: Dict[str, Item] = {item.name: item for item in CATALOGUE}

SOLVED = "Correct! You found it."
YES, NO = "Yes", "No"
INVALID = "Invalid question. Ask one yes/no question."


def _pattern(phrases: Sequence[str]) -> re.Pattern:
    """Any of ``phrases`` as a whole word or phrase, optionally plural (lower-case text)."""
    alternatives = "|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True))
    return re.compile(rf"(?<![a-z])(?:{alternatives})s?(?![a-z])")


_NAME_PATTERNS = [(item, _pattern(item.names)) for item in CATALOGUE]
_ATTRIBUTE_PATTERNS = [(attr, _pattern(words)) for attr, words in ATTRIBUTES.items()]


def _normalise(question: str) -> str:
    return " ".join(str(question).lower().split())


def named_items(question: str) -> List[Item]:
    """The catalogue items the question names, in catalogue order."""
    q = _normalise(question)
    return [item for item, pattern in _NAME_PATTERNS if pattern.search(q)]


def asked_attributes(question: str) -> List[str]:
    """The attributes whose keywords the question contains, in :data:`ATTRIBUTES` order."""
    q = _normalise(question)
    return [attr for attr, pattern in _ATTRIBUTE_PATTERNS if pattern.search(q)]


def oracle(secret: str, question: str) -> Reply:
    """The rule oracle's answer to ``question`` when the hidden item is ``secret`` (a catalogue name); the rules
    are in the module docstring."""
    item = BY_NAME.get(secret)
    if item is None:
        raise TaskError(f"task twenty_questions: unknown secret {secret!r}; choose one of: {', '.join(BY_NAME)}")
    named = named_items(question)
    if len(named) == 1:
        return Reply(SOLVED, done=True, solved=True) if named[0] is item else Reply(NO)
    if len(named) > 1:
        return Reply(INVALID)
    asked = asked_attributes(question)
    if len(asked) == 1:
        return Reply(YES if asked[0] in item.attributes else NO)
    return Reply(INVALID)


class TwentyQuestionsEnv:
    """The environment of an episode (tasks/episodes.Environment): the state is the row's secret."""

    def reset(self, row: Dict[str, Any]) -> str:
        return str(row["answer"])

    def reply(self, state: str, text: str) -> Reply:
        return oracle(state, text)


class TwentyQuestionsVerifier(Verifier):
    """Solved within the episode: some policy turn of the transcript (``batch.texts``, tasks/episodes) names the
    secret, replayed with :func:`oracle`. ``extracted``: the last item the policy guessed (None if it never did)."""

    name = "twenty_questions"

    def __call__(self, completions: Sequence[str], rows: Sequence[dict]) -> VerifyResult:
        self._check_lengths(completions, rows)
        correct: List[bool] = []
        extracted: List[Optional[str]] = []
        for text, row in zip(completions, rows):
            turns = transcript_turns(text)
            correct.append(any(oracle(str(row["answer"]), turn).solved for turn in turns))
            guesses = [named[0].name for named in map(named_items, turns) if len(named) == 1]
            extracted.append(guesses[-1] if guesses else None)
        return VerifyResult(correct=correct, extracted=extracted, timeouts=0)


def make_prompt(candidates: Sequence[str]) -> str:
    topics = ", ".join(words[0] for words in ATTRIBUTES.values())
    return (f"Let's play 20 Questions. I am thinking of one of these {len(candidates)} things: "
            f"{', '.join(candidates)}. Find it by asking me one yes/no question per turn. I can answer questions "
            f"about: {topics}. When you know it, ask \"Is it a <name>?\" with one name.")


@register_task("twenty_questions", multiturn=True,
               verl="its rollouts are multi-turn episodes with an environment, and verl's multi-turn loop is "
                    "tool calling; drox.integrations.verl does not have it yet (docs/verl.md, 'Not done')")
def build(cfg: Any, split: str) -> Task:
    """``task=twenty_questions``: columns problem_id, prompt, answer (the secret), candidates; ``task.env`` is the
    oracle."""
    n = int(cfg.n_candidates)
    if not 2 <= n <= len(CATALOGUE):
        raise TaskError(f"task.n_candidates must be in 2..{len(CATALOGUE)} (got {n})")

    def sample(rng: random.Random) -> dict:
        picked = rng.sample(CATALOGUE, n)
        secret = picked[0].name
        candidates = sorted(item.name for item in picked)
        return {"prompt": with_suffix(make_prompt(candidates), cfg), "answer": secret, "candidates": candidates}

    rows = draw_split("twenty_questions", sample, int(cfg.seed), split, int(cfg.n_train), int(cfg.n_test))
    return Task("twenty_questions", datasets.Dataset.from_list(rows), TwentyQuestionsVerifier(),
                env=TwentyQuestionsEnv())


__all__ = ["ATTRIBUTES", "CATALOGUE", "INVALID", "NO", "SOLVED", "YES", "Item", "TwentyQuestionsEnv",
           "TwentyQuestionsVerifier", "asked_attributes", "build", "named_items", "oracle"]
