"""Fault settings for the provider simulators, and the one place settings are validated.

Every fault is a probability drawn from a seeded ``random.Random``, so a run with the same
seed and the same sequence of calls misbehaves in the same way. Each provider owns its own
``Faults`` (salted with the provider's name) so turning a fault on for one provider does
not shift the random sequence of another.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from typing import Any


class ConfigError(ValueError):
    """A setting or fault change was rejected; nothing was applied."""


@dataclasses.dataclass
class Faults:
    """Rates are shares of calls in [0, 1]; ``*_s`` values are seconds.

    ``raw_retry_after`` and ``raw_ratelimit_reset``, when set, are written as they are into
    every 429 (``Retry-After``; the provider's reset header) instead of the computed wait,
    so a client can be shown absurd hints such as ``1e300``, ``inf`` or ``-5``.
    docs/providers.md lists every fault and where in a call it strikes.
    """

    drop_callback_rate: float = 0.0
    duplicate_callback_rate: float = 0.0
    late_callback_rate: float = 0.0
    late_callback_s: float = 0.5
    lose_cancel_rate: float = 0.0
    error_5xx_rate: float = 0.0
    status_5xx_rate: float = 0.0
    rate_429: float = 0.0
    retry_after_s: float = 1.0
    raw_retry_after: str | None = None
    raw_ratelimit_reset: str | None = None
    slow_rate: float = 0.0
    slow_s: float = 5.0
    reset_rate: float = 0.0
    reset_after_cancel_rate: float = 0.0
    error_5xx_after_cancel_rate: float = 0.0
    redirect_rate: float = 0.0
    redirect_status: int = 302
    seed: int | None = None
    rng: random.Random = dataclasses.field(
        init=False, repr=False, compare=False, default_factory=random.Random
    )
    salt: str = dataclasses.field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        check_changes(self, {f: getattr(self, f) for f in field_names(Faults)})
        self.reseed()

    def bind(self, salt: str) -> None:
        """Give this copy its own random sequence, derived from the seed and ``salt``."""
        self.salt = salt
        self.reseed()

    def reseed(self) -> None:
        self.rng.seed(None if self.seed is None else f"{self.seed}:{self.salt}")

    def chance(self, rate_name: str) -> bool:
        """Draw only when the fault is on, so faults that are off leave the sequence alone."""
        rate = float(getattr(self, rate_name))
        return rate > 0.0 and self.rng.random() < rate

    def update(self, changes: Mapping[str, Any]) -> None:
        staged = check_changes(self, changes)
        for name, value in staged.items():
            setattr(self, name, value)
        if "seed" in staged:
            self.reseed()

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in field_names(Faults)}


def field_names(cls: type[Any]) -> frozenset[str]:
    """The names a PATCH may change: the dataclass fields that ``__init__`` accepts."""
    return frozenset(f.name for f in dataclasses.fields(cls) if f.init)


_TYPES: dict[str, tuple[type[Any], ...]] = {
    "float": (int, float),
    "int": (int,),
    "str": (str,),
    "bool": (bool,),
    "None": (type(None),),
    "dict": (dict,),
}


def check_changes(target: object, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Validate every change against the dataclass annotations before any is applied.

    The rules come from the field names (``*_rate`` and ``rate_429`` are shares, ``*_s`` and
    ``*_tries`` are non-negative) so a new setting needs no new validation code.
    """
    fields = {f.name: f for f in dataclasses.fields(target) if f.init}  # type: ignore[arg-type]
    staged: dict[str, Any] = {}
    for name, value in changes.items():
        field = fields.get(name)
        if field is None:
            raise ConfigError(f"unknown setting {name!r}")
        kinds = [part.strip() for part in str(field.type).split("|")]
        allowed = tuple(t for kind in kinds for t in _TYPES.get(kind.split("[")[0], (object,)))
        if (isinstance(value, bool) and "bool" not in kinds) or not isinstance(value, allowed):
            raise ConfigError(f"{name} must be {field.type}, got {value!r}")
        if isinstance(value, int) and not isinstance(value, bool) and "float" in kinds:
            value = float(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            if (name.endswith("_rate") or name == "rate_429") and not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be between 0 and 1, got {value!r}")
            if name.endswith(("_s", "_tries", "_per_min")) and value < 0:
                raise ConfigError(f"{name} must not be negative, got {value!r}")
            if name == "redirect_status" and not 300 <= value <= 399:
                raise ConfigError(f"{name} must be a 3xx status, got {value!r}")
        if name.startswith("raw_") and isinstance(value, str) and not _header_safe(value):
            raise ConfigError(f"{name} must be printable ASCII on one line, got {value!r}")
        staged[name] = value
    return staged


def _header_safe(value: str) -> bool:
    """What aiohttp will write into a header without refusing the whole answer."""
    return all(" " <= ch <= "~" or ch == "\t" for ch in value)
