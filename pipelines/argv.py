"""Command-line helpers shared by the commands (a leaf module)."""

from __future__ import annotations


def pop_flag(argv: list[str], flag: str, default: str | None) -> tuple[list[str], str | None]:
    """Remove ``flag VALUE`` / ``flag=VALUE`` from ``argv``: (the rest, the value or ``default``)."""
    out, value, i = [], default, 0
    while i < len(argv):
        a = argv[i]
        if a == flag and i + 1 < len(argv):
            value = argv[i + 1]
            i += 2
            continue
        if a.startswith(flag + "="):
            value = a.split("=", 1)[1]
            i += 1
            continue
        out.append(a)
        i += 1
    return out, value
