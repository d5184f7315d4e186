"""drox.signals: logic that several components share, kept below them.

A module here may import drox's base layers (``drox.errors``, ``drox.plugins``, ``drox.registry``, the verifiers in
``drox.tasks.verify``) but no component package (``drox.rewards``, ``drox.gates``, ``drox.filters``,
``drox.trainers``, ...), so two components that need the same logic import it from here instead of from each
other; with the component packages importing all their modules, a component importing another is what makes an
import cycle. Nothing is registered here, and this package imports none of its modules.

- :mod:`drox.signals.rubric`: the rubric checks of ``+gate=rubric`` and ``+reward=rubric`` (and ``has_container``,
  the final-answer container test of ``+reward=format``).
"""
