"""The audit chain's canonical JSON, cut around the sequence number the database assigns."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from jitcore import audit

AT = datetime(2026, 12, 3, 11, 30, 0, 123456, tzinfo=UTC)
HOSTILE = [
    "", "plain", 'quote " and \\ backslash', '"seq":0', '","seq":0,"x":"', "\u00e9t\u00e9 \u2603",
    "emoji \U0001F512", "nul \u0000 and newline \n tab \t", "<!channel> <@U123> <https://evil|x>",
    '{"seq":1}', "\\u0000", "\u2028\u2029", "\ud7ff\ue000",
]


def body(reason: str, **fields: Any) -> dict[str, Any]:
    row = {"seq": 0, "at": AT, "actor": "U0ALICE", "action": "requested", "grant_id": 42,
           "target": "prod-db", "port": 22, "source": "203.0.113.7/32",
           "details": audit.canonical_json({"status": "pending", "reason": reason,
                                            "seq": reason, "nested": {"seq": 0}})}
    row.update(fields)
    return audit._body(row)


@pytest.mark.parametrize("reason", HOSTILE)
@pytest.mark.parametrize("seq", [1, 9, 10, 12345678901234])
def test_pieces_around_seq_make_the_canonical_json(reason: str, seq: int) -> None:
    pieces = audit._around_seq(body(reason))
    assert pieces[0] + str(seq) + pieces[1] == audit.canonical_json(
        {**body(reason), "seq": seq})


@pytest.mark.parametrize("fields", [
    {"grant_id": None, "target": None, "port": None, "source": None},
    {"target": '"seq":0', "source": '"seq":0'},
    {"actor": '"seq":0', "action": "seq"},
])
def test_pieces_hold_whatever_surrounds_seq(fields: dict[str, Any]) -> None:
    head, tail = audit._around_seq(body("r", **fields))
    for seq in (1, 77):
        assert head + str(seq) + tail == audit.canonical_json({**body("r", **fields),
                                                               "seq": seq})


def test_hash_from_pieces_is_the_chain_hash() -> None:
    link = body("fix <replication> & more")
    head, tail = audit._around_seq(link)
    prev = "ab" * 32
    assert audit._sha256(prev + head + "7" + tail) == audit.chain_hash(prev, {**link, "seq": 7})
