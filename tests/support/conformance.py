"""Comparing the emulators' answers with vendor examples."""

from __future__ import annotations

from typing import Any


def assert_contains(expected: Any, actual: Any, path: str = "$", *,
                    case_blind: tuple[str, ...] = ()) -> None:
    """Every key and value of `expected` (a vendor example, abridged) is in `actual`; a
    string at a path ending in one of `case_blind` may differ in case only."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), path
        for key, item in expected.items():
            assert key in actual, f"{path}.{key} missing"
            assert_contains(item, actual[key], f"{path}.{key}", case_blind=case_blind)
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), path
        for index, (item, other) in enumerate(zip(expected, actual, strict=True)):
            assert_contains(item, other, f"{path}[{index}]", case_blind=case_blind)
    elif isinstance(expected, str) and case_blind and path.endswith(case_blind):
        assert isinstance(actual, str) and actual.lower() == expected.lower(), path
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"
