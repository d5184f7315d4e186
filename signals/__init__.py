"""drox.signals: logic that several components share, kept below them.

A module here may import drox's base layers (``drox.errors``, ``drox.plugins``, ``drox.registry``,
``drox.masked_stats``, the verifiers in ``drox.tasks.verify``) but no component package (``drox.rewards``,
``drox.gates``, ``drox.filters``, ``drox.trainers``, ``drox.models``, ``drox.rollout``, ``drox.evaluation``, ...),
so two components that need the same logic import it from here instead of from each other; with the component
packages importing all their modules, a component importing another is what makes an import cycle. Nothing is registered here, and this package imports none of its modules.

- :mod:`drox.signals.rubric`: the rubric checks of ``+gate=rubric`` and ``+reward=rubric`` (and ``has_container``,
  the final-answer container test of ``+reward=format``).
- :mod:`drox.signals.r3`: DRO's σ statistics and R3 (the ``variance`` reward, the ``query`` filter, the verl
  backend); the teacher-forced pass that produces them needs a model, so it sits higher, in
  :mod:`drox.teacher_forced.r3`.
- :mod:`drox.signals.spans`: text <-> token helpers (where the final answer starts, which token holds a character,
  padding of ragged id lists) for the model-based rewards, open-ended evaluation and the verl backend.
- :mod:`drox.signals.calibration`: Brier, ECE, AUROC and the stated-confidence parser (``+reward=brier``, ``drox eval``).
- :mod:`drox.signals.rouge`: ROUGE-N / ROUGE-L F1 (``+reward=rouge``, open-ended evaluation).
- :mod:`drox.signals.logprob_gap`: per-token teacher − policy log-probability gaps and their diagnostics
  (``+reward=sdpo``, ``+reward=distill``).
"""
