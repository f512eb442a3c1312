"""How weight loaders name the keys that do not fit: one wording for the zoo and backbone.init."""

from __future__ import annotations

SHOWN_KEYS = 10


def key_listing(keys: list[str]) -> str:
    """The first ``SHOWN_KEYS`` keys, then how many more there are."""
    shown = ", ".join(keys[:SHOWN_KEYS])
    more = len(keys) - SHOWN_KEYS
    return shown + (f", ... (+{more} more)" if more > 0 else "")


def key_problems(missing: list[str], unexpected: list[str], mismatched: list[str]) -> list[str]:
    """One clause per kind of problem (missing, unexpected, shape mismatches), none if none."""
    named = (("missing keys", missing), ("unexpected keys", unexpected))
    problems = [f"{kind}: {key_listing(keys)}" for kind, keys in named if keys]
    if mismatched:
        problems.append(f"shape mismatches: {key_listing(mismatched)}")
    return problems
