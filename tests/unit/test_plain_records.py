"""The plain records the hot paths use are built positionally from whole rows: their
fields must be the table's columns, in the table's order."""

from __future__ import annotations

import dataclasses

import pytest

from jitcore.store.models import GrantRecord, HandleRecord, grants_table, rule_handles_table


@pytest.mark.parametrize(("record", "table"), [(GrantRecord, grants_table),
                                               (HandleRecord, rule_handles_table)])
def test_a_record_has_its_tables_columns_in_order(record: type, table: object) -> None:
    assert [f.name for f in dataclasses.fields(record)] == [c.name for c in table.c]  # type: ignore[attr-defined]


def test_a_record_cannot_be_changed_by_assignment() -> None:
    """A change to a grant is a statement; an assignment that the ORM would have flushed
    is refused outright instead of being silently dropped."""
    handle = HandleRecord(id=1, cloud="aws", scope="sg-1", ref="sgr-1", port=22,
                          protocol="tcp", source="203.0.113.7/32", owned=True,
                          created_at=None, removed_at=None, entry=None)  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        handle.removed_at = None  # type: ignore[misc]
