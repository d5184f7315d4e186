"""drox.teacher_forced: teacher-forced scoring passes that several components share, kept below them.

A pass here scores given text under a model (the current policy, the trainer's reference or a frozen copy), so it
needs ``drox.models`` and the rollout batch (``drox.rollout``), which :mod:`drox.signals` may not import; it sits
between the rollout layer and the components (tests/test_import_graph.py) and imports no component package
(``drox.rewards``, ``drox.gates``, ``drox.filters``, ...). The scoring context is typed only (``TYPE_CHECKING``).
Nothing is registered here, and this package imports none of its modules.

- :mod:`drox.teacher_forced.r3`: DRO's pass over the reference spliced after each rollout's reasoning (the
  ``variance`` reward's R3 and the ``query`` filter's σ).
"""
