"""Limits: defaults, platform maxima, and clear refusals."""

from __future__ import annotations

import pytest

from wasmhost.runtime import Limits


def test_defaults_are_within_maxima() -> None:
    limits = Limits().validated()
    assert limits.fuel == 100_000_000 and limits.timeout_ms == 5_000 and limits.memory_mb == 32
    for name, value in limits.to_dict().items():
        assert 0 < value <= Limits.MAXIMA[name]
    assert Limits.maximum().validated().timeout_ms == 60_000


@pytest.mark.parametrize(
    ("field", "value", "text"),
    [
        ("timeout_ms", 600_000, "exceeds the platform maximum of 60000"),
        ("memory_mb", 1024, "exceeds the platform maximum of 256"),
        ("fuel", 0, "must be greater than 0"),
        ("max_sends", -1, "must be greater than 0"),
        ("max_log_lines", True, "must be an integer"),
    ],
)
def test_out_of_range_is_refused_with_the_field_named(field: str, value: object, text: str) -> None:
    with pytest.raises(ValueError, match=f"limits.{field}") as info:
        Limits(**{field: value}).validated()  # type: ignore[arg-type]
    assert text in str(info.value)


def test_from_dict_rejects_unknown_names_and_validates() -> None:
    assert Limits.from_dict({"timeout_ms": 100}).timeout_ms == 100
    assert Limits.from_dict(None) == Limits()
    with pytest.raises(ValueError, match="unknown limit"):
        Limits.from_dict({"cpu": 1})
    with pytest.raises(ValueError, match="maximum"):
        Limits.from_dict({"max_sends": 5000})
    with pytest.raises(ValueError, match="maximum"):
        Limits().replace(fuel=10**10)
