"""Print the environment variables of every service as Markdown tables (for docs/configuration.md).

``uv run python -m instore_shared.settings_doc`` prints the block that docs/configuration.md holds
between the ``<!-- settings:begin -->`` and ``<!-- settings:end -->`` markers; a unit test
fails when the two differ, so the page cannot drift from the code.
"""

from __future__ import annotations

import importlib

from pydantic import SecretStr
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

# (title, "module:Class") in the page's order; import paths so this module needs no service at import time.
SETTINGS_CLASSES: list[tuple[str, str]] = [
    ("Every service (Kafka, logging)", "instore_shared.settings:BaseServiceSettings"),
    ("gateway", "instore_gateway.settings:GatewaySettings"),
    ("cart-mapping", "instore_cart_mapping.settings:CartMappingSettings"),
    ("order-finalization", "instore_order_finalization.settings:OrderFinalizationSettings"),
    ("refund", "instore_refund.settings:RefundSettings"),
    ("payment-extension", "instore_payment_extension.settings:PaymentExtensionSettings"),
    ("reconciler", "instore_order_finalization.reconciler.settings:ReconcilerSettings"),
    (
        "cart-mapping, order-finalization, refund and payment-extension: Composable Commerce API client",
        "instore_shared.settings:CommercetoolsSettings",
    ),
]


def _load(path: str) -> type[BaseSettings]:
    module, _, name = path.partition(":")
    cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, BaseSettings)):
        raise TypeError(f"{path} is not a settings class")
    return cls


def _rows(cls: type[BaseSettings], skip: set[str]) -> list[str]:
    prefix = str(cls.model_config.get("env_prefix", "")).upper()
    rows = []
    for name, field in cls.model_fields.items():
        if name in skip:
            continue
        if field.default is PydanticUndefined:
            default = "**required**"
        elif isinstance(field.default, SecretStr):
            default = "*(secret; development default)*"
        else:
            default = f"`{field.default}`" if field.default not in ("", None) else "*(empty)*"
        meaning = " ".join((field.description or "").split())  # a docstring wrapped over lines is one table cell
        rows.append(f"| `{prefix}{name.upper()}` | {default} | {meaning} |")
    return rows


def render() -> str:
    """The Markdown block: one table per settings class; shared fields listed once."""
    base = _load(SETTINGS_CLASSES[0][1])
    shared = set(base.model_fields)
    out: list[str] = []
    for i, (title, path) in enumerate(SETTINGS_CLASSES):
        cls = _load(path)
        out += [f"**{title}**", "", "| variable | default | meaning |", "| --- | --- | --- |"]
        out += _rows(cls, set() if i == 0 else shared)
        out.append("")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
