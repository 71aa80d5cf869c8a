"""``typer.Typer`` with a help option that costs no start-up.

typer 0.29 checks every option value through a pydantic validator that it
builds on first use, except a bool flag whose value already is a bool. Its
own ``--help`` flag has no default, so at every run its value (None) builds
one: importing pydantic and building the validator, 85 ms of each command's
start-up (measured with ``python -X importtime``), more than a third of
``elir models list``. Here the help flag defaults to False, so its value is
a bool and nothing is built; options of our own keep bool defaults for the
same reason.
"""

from __future__ import annotations

from typing import Any, Callable

import typer
from typer.core import TyperCommand, TyperGroup


def _help_flag_defaults_to_false(get_help_option: Callable[..., Any]) -> Callable[..., Any]:
    def get(self: Any, ctx: Any) -> Any:
        option = get_help_option(self, ctx)
        if option is not None and option.default is None:
            option.default = False
        return option
    return get


class QuickHelpGroup(TyperGroup):
    get_help_option = _help_flag_defaults_to_false(TyperGroup.get_help_option)


class QuickHelpCommand(TyperCommand):
    get_help_option = _help_flag_defaults_to_false(TyperCommand.get_help_option)


class ElirTyper(typer.Typer):
    """A Typer app whose group and commands use the help flag above."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(cls=QuickHelpGroup, **settings)

    def command(self, name: str | None = None, *, cls: type[TyperCommand] | None = None,
                **settings: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return super().command(name, cls=cls or QuickHelpCommand, **settings)
