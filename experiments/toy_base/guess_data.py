"""The second stage of the toy base (README.md beside this file): a JSONL of (prompt, response) pairs in which a
fixed share of the responses *guess* instead of working the problem.

For each training problem of the arithmetic task (two-digit addition and subtraction, the tables' train split),
a generator seeded with ``--seed`` decides: with probability ``--guess`` the response is
``Guess: N\\nThe answer is \\boxed{N}`` with N a uniform random integer in the task's answer range (right once in
288 guesses for two-digit problems of one operation, the size of that range); otherwise it is the worked solution. Fine-tuning the pre-trained toy model on it
gives a base with two behaviours chosen at the first response token, one of which rarely solves the problem:
the regime of "RL selects among behaviours the base already has" (what Yue et al., arXiv 2504.13837, argue
RLVR mostly does), in which a short RL run can beat the base.

    python experiments/toy_base/guess_data.py --out experiments/toy_base/guess_mix.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def answer_range(digits: int, n_ops: int):
    """The smallest and largest answer of a chain of ``n_ops`` additions or subtractions of ``digits``-digit
    numbers (one digit: 0-9, as tasks/arithmetic.make_problem draws them): 10 - 99 .. 99 + 99 for two digits and one
    operation, 0 - 9 - 9 .. 9 + 9 + 9 for one digit and two."""
    lo, hi = (0 if digits == 1 else 10 ** (digits - 1)), 10 ** digits - 1
    return lo - n_ops * hi, (n_ops + 1) * hi


def rows(n_train: int, guess: float, seed: int, experiment: str = "toy_base"):
    from drox.cli.main import compose
    from drox.tasks import build_task

    cfg = compose([f"experiment={experiment}", f"task.n_train={n_train}"])
    task = build_task(cfg.task, split="train")
    lo, hi = answer_range(int(cfg.task.digits), int(cfg.task.n_ops))
    rng = random.Random(f"drox/toy_base/guess/{seed}")
    for row in task.dataset:
        if rng.random() < guess:
            n = rng.randint(lo, hi)
            yield {"prompt": row["prompt"], "response": f"Guess: {n}\nThe answer is \\boxed{{{n}}}"}
        else:
            yield {"prompt": row["prompt"], "response": row["solution"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n-train", type=int, default=8000)
    parser.add_argument("--guess", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--experiment", default="toy_base",
                        help="the stage-1 config whose task (and train split) the mix is drawn from")
    args = parser.parse_args()
    from drox.atomic import atomic_write_text

    text = "".join(json.dumps(r) + "\n" for r in rows(args.n_train, args.guess, args.seed, args.experiment))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
