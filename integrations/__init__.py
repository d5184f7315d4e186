"""drox.integrations: adapters that hand drox's components to other RL engines (one sub-package per engine).

Nothing here is imported by ``import drox``; each engine's package imports that engine lazily, inside itself.
"""
