"""``python -m elir_cli`` runs the ``elir`` command."""

from .cli import main

main()
