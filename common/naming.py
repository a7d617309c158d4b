"""Names a person gives: merchants and runs appear in paths, ledgers and logs."""

from __future__ import annotations

from common.errors import ConfigError


def check_name(name: str, *, what: str = "Merchant name") -> str:
    """Letters, digits, '-', '_' and '.', not starting with '.'; returns ``name``."""
    if (
        not name
        or len(name) > 64
        or name.startswith(".")
        or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in name)
    ):
        raise ConfigError(
            f"{what} {name!r} must be 1-64 ASCII letters, digits, '-', '_' or '.', not "
            "starting with '.', e.g. shop-berlin."
        )
    return name
