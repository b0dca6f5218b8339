"""Command-line values shared by several ``dgm`` sub-commands."""

from __future__ import annotations

from dgm.core.errors import ConfigError

__all__ = ["parse_pairs"]


def parse_pairs(items: list[str], flag: str) -> dict[str, str]:
    """``["a=1", "b=[2,3]"]`` (repeated ``flag KEY=VALUE``) -> ``{"a": "1", "b": "[2,3]"}``.

    >>> parse_pairs(["lr=1e-3", "hidden=[8,8]"], "--set")
    {'lr': '1e-3', 'hidden': '[8,8]'}
    """
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(
                f"{flag} takes KEY=VALUE (e.g. {flag} hidden=[256,256]), not {item!r}"
            )
        out[key.strip()] = value.strip()
    return out
