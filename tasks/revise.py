"""An open-ended task with a reference text and no exact verifier: make a sentence concise.

Built from templated (wordy, concise) sentence pairs filled with names, objects, places
and times, so it is seeded, deterministic and needs no data files.
"""

from __future__ import annotations

import random
from typing import Any

import datasets

from drox.components import register_task

from .common import Task, draw_split, with_suffix

# (wordy, concise); slots: {name} {thing} {place} {time}
TEMPLATES: list[tuple[str, str]] = [
    ("Due to the fact that {name} was late, the meeting about the {thing} was postponed until {time}.",
     "Because {name} was late, the {thing} meeting was postponed until {time}."),
    ("In order to fix the {thing}, {name} went to the {place} {time}.",
     "To fix the {thing}, {name} went to the {place} {time}."),
    ("At this point in time, {name} is not able to find the {thing}.",
     "{name} cannot find the {thing} now."),
    ("{name} made the decision to leave the {thing} at the {place}.",
     "{name} decided to leave the {thing} at the {place}."),
    ("It is {name} who is the person responsible for the {thing}.",
     "{name} is responsible for the {thing}."),
    ("There is a {thing} in the {place} that {name} wants to sell {time}.",
     "{name} wants to sell a {thing} in the {place} {time}."),
    ("{name} is of the opinion that the {thing} should be moved to the {place}.",
     "{name} thinks the {thing} should be moved to the {place}."),
    ("In the event that the {thing} breaks, {name} will call the {place} {time}.",
     "If the {thing} breaks, {name} will call the {place} {time}."),
    ("{name} gave a presentation about the {thing} at the {place} {time}.",
     "{name} presented the {thing} at the {place} {time}."),
    ("The {thing} was cleaned by {name} in the {place} {time}.",
     "{name} cleaned the {thing} in the {place} {time}."),
    ("{name} has the ability to repair the {thing} without any help.",
     "{name} can repair the {thing} alone."),
    ("With regard to the {thing}, {name} has not yet reached a final decision.",
     "{name} has not decided about the {thing}."),
    ("{name} came to the conclusion that the {thing} in the {place} was broken.",
     "{name} concluded that the {thing} in the {place} was broken."),
    ("For the purpose of testing the {thing}, {name} stayed at the {place} {time}.",
     "To test the {thing}, {name} stayed at the {place} {time}."),
    ("Despite the fact that the {thing} was old, {name} kept it in the {place}.",
     "Although the {thing} was old, {name} kept it in the {place}."),
    ("{name} conducted an investigation into the missing {thing} {time}.",
     "{name} investigated the missing {thing} {time}."),
    ("It is absolutely essential that {name} brings the {thing} to the {place} {time}.",
     "{name} must bring the {thing} to the {place} {time}."),
    ("{name} provided assistance to the team that was working on the {thing}.",
     "{name} helped the team working on the {thing}."),
    ("The reason why {name} left the {place} is that the {thing} was missing.",
     "{name} left the {place} because the {thing} was missing."),
    ("{name} is in possession of a {thing} that is very, very old.",
     "{name} has an ancient {thing}."),
    ("Each and every {thing} in the {place} was checked by {name} {time}.",
     "{name} checked every {thing} in the {place} {time}."),
    ("{name} arrived at the {place} at an earlier time than expected.",
     "{name} arrived at the {place} early."),
    ("{name} will make an attempt to find the {thing} {time}.",
     "{name} will try to find the {thing} {time}."),
    ("As a matter of fact, the {thing} that {name} bought is too small.",
     "The {thing} {name} bought is too small."),
    ("{name} put the {thing} back in its original place in the {place}.",
     "{name} put the {thing} back in the {place}."),
    ("Until such time as the {thing} arrives, {name} will wait at the {place}.",
     "Until the {thing} arrives, {name} will wait at the {place}."),
    ("{name} has a tendency to forget the {thing} when going to the {place}.",
     "{name} often forgets the {thing} when going to the {place}."),
    ("The {thing}, which was blue in color, was left by {name} in the {place}.",
     "{name} left the blue {thing} in the {place}."),
    ("{name} is planning to go ahead and paint the {thing} {time}.",
     "{name} plans to paint the {thing} {time}."),
    ("In spite of the rain, {name} walked all the way to the {place} to buy a {thing}.",
     "Despite the rain, {name} walked to the {place} to buy a {thing}."),
    ("{name} asked the question of whether the {thing} was ready {time}.",
     "{name} asked whether the {thing} was ready {time}."),
    ("It was {time} when {name} finally completed the task of fixing the {thing}.",
     "{name} finally fixed the {thing} {time}."),
]
NAMES = ["Alice", "Bob", "Carmen", "Deepak", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Lars"]
THINGS = ["printer", "bicycle", "laptop", "garden hose", "piano", "camera", "lamp", "kettle", "tent", "clock", "radio", "ladder"]
PLACES = ["office", "library", "garage", "market", "station", "museum", "school", "clinic", "bakery", "warehouse"]
TIMES = ["on Monday", "tomorrow", "last week", "this evening", "next month", "after lunch", "on Friday", "yesterday"]


def make_problem(rng: random.Random) -> dict:
    index = rng.randrange(len(TEMPLATES))
    slots = {
        "name": rng.choice(NAMES),
        "thing": rng.choice(THINGS),
        "place": rng.choice(PLACES),
        "time": rng.choice(TIMES),
    }
    wordy, concise = TEMPLATES[index]
    return {"source": wordy.format(**slots), "answer": concise.format(**slots), "template": index}


@register_task("revise", verl="drox.integrations.verl.mapping:task")
def build(cfg: Any, split: str) -> Task:
    """``task=revise``: columns problem_id, prompt, answer (reference), source, template."""

    def sample(rng: random.Random) -> dict:
        p = make_problem(rng)
        prompt = f"Rewrite the following sentence more concisely:\n\n{p['source']}"
        return {"prompt": with_suffix(prompt, cfg), **p}

    rows = draw_split("revise", sample, int(cfg.seed), split, int(cfg.n_train), int(cfg.n_test))
    return Task("revise", datasets.Dataset.from_list(rows), None)
