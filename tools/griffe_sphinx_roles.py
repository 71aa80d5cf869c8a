"""A griffe extension for the API reference: Sphinx roles in docstrings become inline code.

elir-cli's docstrings name other objects the Sphinx way (``:func:`restore_array```,
``:class:`~elir_cli.errors.ElirError```). mkdocstrings renders Markdown, where
such a role would show as literal text, so this rewrites each one to the name in
backticks: the full dotted path, or its last part where the role starts with
``~`` (Sphinx's own rule). mkdocs.yml loads it (mkdocstrings' ``extensions``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|exc|data|obj|const):`(~?)([^`<>]+?)`")


def plain_roles(text: str) -> str:
    """``:func:`~a.b.c``` -> ```c```; ``:mod:`a.b``` -> ```a.b```."""
    return ROLE.sub(lambda m: f"`{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}`", text)


class SphinxRoles(griffe.Extension):
    """Rewrites the docstring of every object griffe loads."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain_roles(obj.docstring.value)
