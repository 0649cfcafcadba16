"""The command line of every service process: ``--help`` that lists the settings, nothing else to parse.

A service is configured by environment variables only (12-factor; the Kubernetes manifests set
them). Its entry point still answers ``--help`` — listing those variables, their defaults and
meaning, from the settings classes themselves — and refuses any other argument with its usage
(exit 2), without reading a setting, starting a server or connecting to Kafka: so
``kubectl exec … -- instore-gateway --help`` or ``podman run IMAGE --help`` is safe anywhere.
docs/configuration.md holds the same table (``python -m instore_shared.settings_doc``).
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence

from pydantic import AliasChoices, SecretStr
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

DOCS_HINT = "All settings: docs/configuration.md (the same table, generated from the settings classes)."


def env_names(cls: type[BaseSettings], name: str) -> list[str]:
    """The environment variables that set field ``name`` of ``cls``: its alias choices when it has them,
    else ``env_prefix`` + the field name, upper case (pydantic-settings' rule with ``case_sensitive=False``)."""
    field = cls.model_fields[name]
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice).upper() for choice in alias.choices if isinstance(choice, str)]
    if isinstance(alias, str):
        return [alias.upper()]
    return [f"{cls.model_config.get('env_prefix', '')}{name}".upper()]


def settings_help(classes: Sequence[type[BaseSettings]], width: int = 100) -> str:
    """The environment variables of ``classes`` as help text: one entry per variable (listed once even when
    several classes share it), its default (``required``; a secret's is never shown) and its docstring."""
    seen: set[str] = set()
    out: list[str] = []
    for cls in classes:
        for name, field in cls.model_fields.items():
            names = env_names(cls, name)
            if names[0] in seen:
                continue
            seen.update(names)
            if field.default is PydanticUndefined:
                default = "required"
            elif isinstance(field.default, SecretStr):
                default = "a secret; the default is for development only"
            elif isinstance(field.default, bool):
                default = f"default {str(field.default).lower()}"
            else:
                default = f"default {field.default}" if field.default not in ("", None) else "default empty"
            meaning = " ".join((field.description or "").split())
            out.append(f"  {' | '.join(names)}  ({default})")
            out += textwrap.wrap(meaning, width, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(out)


def parse_service_args(
    prog: str, description: str, classes: Sequence[type[BaseSettings]], argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """Parse a service's command line: only ``-h``/``--help`` exists.

    ``--help`` prints ``description`` and the environment variables of ``classes`` (:func:`settings_help`)
    and exits 0; any argument exits 2 with the usage (argparse). Returns the (empty) namespace otherwise.
    Reads no setting: the caller loads them afterwards.
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Configured by environment variables only:\n" + settings_help(classes) + "\n\n" + DOCS_HINT,
    )
    return parser.parse_args(argv)
