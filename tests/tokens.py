"""Tokens for the tests: long enough for ORCH_API_TOKENS (32 characters at least), and
readable, since the label starts each one."""

from __future__ import annotations

import hashlib

#: ORCH_SECRET_KEY of the tests' services: unnamed tokens get names derived with it.
SECRET_KEY = "tests-secret-key-" + "k" * 32


def token(label: str) -> str:
    """A token that starts with `label` and is 32 characters or more."""
    return f"{label}-" + hashlib.sha256(label.encode()).hexdigest()[:32]


def entry(label: str, scopes: str = "", **options: str) -> str:
    """One ORCH_API_TOKENS entry for token(label), named `label` unless options say."""
    text = token(label) + (f":{scopes}" if scopes else "")
    options.setdefault("name", label)
    return text + "".join(f";{key}={value}" for key, value in options.items())
