"""The one argument grammar every command shares. Three shapes, each parsed by the registry's
:func:`~modelport.registry.names.parse_ref` (the only parser of the syntax) and then checked for shape:

- ``REF`` — one version: ``NAME``, ``NAME@VERSION``, ``NAME@ALIAS`` or ``NAME@LABEL``. A bare ``NAME`` is
  the model's default route (``@production`` if set, else ``@latest``), as in serving and the Python API.
- ``NAME@ALIAS`` — an alias (``alias rm``, ``alias protect``, ``release …``).
- ``NAME`` — a whole model (``versions``, ``policy``, ``retention`` …): no ``@``.

A version given as an option of a command that already names the model (``--canary``, ``--shadow``,
``--parent``) is what follows ``@``: a number, a label or an alias.

Commands whose arguments changed answer their previous forms with the new one (:func:`refuse_old_form`)
rather than click's bare "unexpected extra argument".
"""

from __future__ import annotations

from typing import Annotated

import typer

from modelport.errors import InvalidInput
from modelport.registry.names import ModelRef, check_alias_name, check_model_name, parse_ref

__all__ = [
    "OLD_FORMS",
    "REF_HELP",
    "AliasRefArg",
    "ModelNameArg",
    "RefArg",
    "alias_ref",
    "model_name",
    "refuse_old_form",
    "version_of",
    "whole_model_or_version",
]

REF_HELP = (
    "NAME@VERSION, NAME@ALIAS, NAME@LABEL, or NAME alone: the default route "
    "(@production if set, else @latest)."
)
RefArg = Annotated[str, typer.Argument(metavar="REF", help=REF_HELP, show_default=False)]
AliasRefArg = Annotated[
    str, typer.Argument(metavar="NAME@ALIAS", help="The alias, e.g. credit-rating@production.")
]
ModelNameArg = Annotated[str, typer.Argument(metavar="NAME", help="Model name (the whole model).")]

# Commands with these settings collect surplus positional arguments in ``ctx.args`` instead of failing
# in click, so that an old form (``alias set NAME ALIAS VERSION``) gets a message naming the new one.
OLD_FORMS = {"allow_extra_args": True}


def _shown(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")


def alias_ref(text: str) -> tuple[str, str]:
    """``NAME@ALIAS`` as ``(name, alias)``; a bare name, a version or a label is refused, saying so."""
    parsed = parse_ref(text)
    if parsed.alias is None:
        what = "no alias" if parsed.selector is None else f"version {parsed.selector}, not an alias"
        raise InvalidInput(f"{_shown(text)} names {what}: give NAME@ALIAS, e.g. {parsed.name}@production")
    return parsed.name, check_alias_name(parsed.alias)


def model_name(text: str) -> str:
    """A whole model's ``NAME``; a reference (``NAME@…``) is refused with the name it should have been."""
    name, sep, _ = text.partition("@")
    if sep:
        raise InvalidInput(
            f"{_shown(text)} is a reference to one version; this command works on a whole model: "
            f"give its NAME alone ({_shown(name)})"
        )
    return check_model_name(text)


def version_of(name: str, text: str) -> ModelRef:
    """A version of model ``name`` given as an option: ``3``, ``2.1.0`` or ``staging`` (or the full
    ``NAME@…`` of the same model)."""
    parsed = parse_ref(text if "@" in text else f"{name}@{text}")
    if parsed.name != name:
        raise InvalidInput(f"{_shown(text)} is a version of {parsed.name!r}, not of {name!r}")
    return parsed


def whole_model_or_version(text: str, all_versions: bool) -> ModelRef:
    """The REF of a command that can also cover every version (``--all-versions``, then NAME alone)."""
    parsed = parse_ref(text)
    if all_versions and parsed.selector is not None:
        raise InvalidInput(
            f"--all-versions covers every version of the model: give its NAME alone, not {_shown(text)}"
        )
    return parsed


def refuse_old_form(surplus: list[str], usage: str, instead: str) -> None:
    """Refuse surplus positional arguments — a previous form of the command — naming the new one.
    ``usage`` is the command's grammar, ``instead`` the same request written in it."""
    if surplus:
        raise InvalidInput(
            f"too many arguments ({' '.join(surplus)!r}): the form is `modelport {usage}`; write `{instead}`"
        )
