"""The ``elir`` command line: thin Typer commands over the library API.

Layer 5 (the top). May import: everything in elir_cli.
"""

from .app import app, main

__all__ = ["app", "main"]
