"""Where weights come from: tasks, the manifest, downloads and the store.

Owns the task registry (``weights/manifest.json``), hub and release downloads,
the on-disk store and its records, the inventory behind ``elir models``,
loading a model by task, and publishing weights to a hub repo.

Layer 1. May import: elir_cli.model.
"""
