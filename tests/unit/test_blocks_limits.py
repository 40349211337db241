"""Slack's limits hold for any policy: `/jit targets` with hundreds of targets, `/jit list`
and the App Home with hundreds of grants on long-named targets."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

from bot import blocks
from jitcore.domain import GrantView, Status
from jitcore.policy import Policy, Target
from jitcore.policy_file import parse_policy

# Slack refused blocks holding about 13,200 characters (msg_blocks_too_long), counted in
# more than one way; a message must stay below it whichever way it is counted.
REFUSED_AT = 13_000
T0 = datetime(2024, 5, 1, 14, 0, tzinfo=UTC)


def texts(payload: Any) -> list[str]:
    """Every `text` string in a message, a view or a block, nested ones included."""
    if isinstance(payload, dict):
        return [t for key, value in payload.items()
                for t in ([value] if key == "text" and isinstance(value, str)
                          else texts(value))]
    if isinstance(payload, list):
        return [t for item in payload for t in texts(item)]
    return []


def assert_within_slack_limits(payload: dict[str, Any], max_blocks: int) -> None:
    """Block Kit's documented limits (slack_sdk checks them too), and for a message the
    total size past which Slack refuses its blocks."""
    assert 1 <= len(payload["blocks"]) <= max_blocks
    for block in payload["blocks"]:
        Block.parse(block).validate_json()  # type: ignore[union-attr]
        if "text" in block and block["type"] == "section":
            assert len(block["text"]["text"]) <= 3000
        fields = block.get("fields", [])
        assert len(fields) <= 10 and all(len(f["text"]) <= 2000 for f in fields)
        assert len(block.get("elements", [])) <= 25
    if payload.get("type") == "home":
        View(**payload).validate_json()
        return
    assert sum(map(len, texts(payload["blocks"]))) <= blocks.MAX_MESSAGE_CHARS < REFUSED_AT
    assert len(json.dumps(payload["blocks"], ensure_ascii=False)) < REFUSED_AT
    assert 0 < len(payload["text"]) <= blocks.MAX_FALLBACK


def big_policy(count: int, name_length: int = 63) -> Policy:
    """`count` targets with two ports each and long names (63 characters is the most a
    policy allows), half on AWS, half on Azure with long resource names."""
    targets: dict[str, Any] = {}
    for n in range(count):
        name = f"t{n:04}-" + "payments-postgres-replica-eu-west-"[: name_length - 6]
        name = (name + "x" * name_length)[:name_length]
        where: dict[str, Any] = (
            {"aws": {"region": "eu-west-1", "security_group_id": f"sg-{n:017x}"}}
            if n % 2 else
            {"azure": {"subscription_id": "00000000-0000-0000-0000-000000000000",
                       "resource_group": "rg-" + "p" * 85,
                       "network_security_group": "nsg-" + "q" * 75,
                       "destination": f"10.0.{n // 250}.{n % 250 + 1}"}})
        targets[name] = {**where, "ports": {"ssh": {"port": 22, "max_duration": "1h"},
                                            "rdp": 3389}}
    return parse_policy({
        "slack": {"approvals_channel": "C0APPROVE", "audit_channel": "C0AUDIT"},
        "defaults": {"max_duration": "3h", "approval_timeout": "1h", "requesters": ["*"],
                     "approvers": ["U0BOB"]},
        "targets": targets,
    }, "big.yaml")


def shown_targets(message: dict[str, Any]) -> list[str]:
    return re.findall(r"^\*([^*]+)\* · ", "\n".join(texts(message["blocks"])), re.M)


@pytest.mark.parametrize(("count", "name_length"), [(500, 63), (500, 8), (140, 20)])
def test_targets_of_any_policy_fit_in_one_message(count: int, name_length: int) -> None:
    targets = list(big_policy(count, name_length).targets.values())
    assert all(len(t.ports) == 2 for t in targets) and len(targets) == count
    message = blocks.targets_message(targets)
    assert_within_slack_limits(message, blocks.MAX_MESSAGE_BLOCKS)
    shown = shown_targets(message)
    assert shown == [blocks.escape(t.name) for t in targets[: len(shown)]]  # the first ones
    closing = message["blocks"][-1]
    assert closing["type"] == "context"
    left = re.match(r"…and (\d+) more: ", closing["elements"][0]["text"])
    assert left is not None and len(shown) + int(left[1]) == count
    assert len(shown) >= 20  # the room is used, not wasted
    assert message["text"] == f"/jit targets: {count}"


def test_a_small_policy_shows_every_target_and_no_closing_line() -> None:
    targets = list(big_policy(20).targets.values())
    message = blocks.targets_message(targets)
    assert_within_slack_limits(message, blocks.MAX_MESSAGE_BLOCKS)
    assert shown_targets(message) == [t.name for t in targets]
    assert all(b["type"] == "section" for b in message["blocks"])
    assert "more" not in json.dumps(message)


def test_the_closing_line_makes_room_for_itself() -> None:
    """Targets that fill the budget exactly without a closing line, and one more."""
    base = next(iter(big_policy(1).targets.values()))
    line = len(shown_targets_line(base))
    fits = (blocks.MAX_MESSAGE_CHARS - len("*Targets you may ask for*") + 1) // (line + 1)
    for count in (fits - 1, fits, fits + 1, fits + 2):
        targets = [dataclasses.replace(base, name=f"{base.name[:-4]}{n:04}")
                   for n in range(count)]
        message = blocks.targets_message(targets)
        assert_within_slack_limits(message, blocks.MAX_MESSAGE_BLOCKS)
        left = re.search(r"…and (\d+) more", message["blocks"][-1]["elements"][0]["text"]
                         if message["blocks"][-1]["type"] == "context" else "")
        assert len(shown_targets(message)) + (int(left[1]) if left else 0) == count


def shown_targets_line(target: Target) -> str:
    return str(blocks.targets_message([target])["blocks"][1]["text"]["text"])


def grant(n: int, status: Status, target: str, requester: str = "U0ALICE") -> GrantView:
    return GrantView(
        id=n, status=status, requester=requester, target=target, cloud="aws", service="ssh",
        port=22, protocol="tcp", source="203.0.113.7/32", duration=timedelta(minutes=30),
        reason="why " * 100, created_at=T0, expires_at=T0 + timedelta(minutes=30))


@pytest.mark.parametrize("name_length", [20, 63, 500])
def test_home_view_with_hundreds_of_grants_on_long_targets(name_length: int) -> None:
    name = "t" * name_length
    view = blocks.home_view([grant(n, Status.ACTIVE, name) for n in range(500)],
                            [grant(n, Status.PENDING, name) for n in range(500, 1000)],
                            [grant(n, Status.PENDING, name, "U0CAROL")
                             for n in range(1000, 1500)])
    assert_within_slack_limits(view, blocks.MAX_VIEW_BLOCKS)
    assert len(view["blocks"]) >= 95
    more = [t for t in texts(view) if t.startswith("…and ")]
    assert len(more) == 3  # each list says how many it leaves out


def test_list_of_grants_on_long_targets_fits_in_one_message() -> None:
    message = blocks.grants_message([grant(n, Status.ACTIVE, "t" * 500) for n in range(200)])
    assert_within_slack_limits(message, blocks.MAX_MESSAGE_BLOCKS)
    left = re.fullmatch(r"…and (\d+) more", message["blocks"][-1]["elements"][0]["text"])
    assert left is not None
    shown = sum(t.count("\n") + 1 for t in texts(message["blocks"][1:-1]))
    assert shown + int(left[1]) == 200
