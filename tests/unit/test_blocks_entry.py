"""Where to connect through a firewall's DNAT, as Slack shows it: the approval card once the
grant is open, the requester's DM when it opens, `/jit list` and the App Home. A grant
without an entry reads as before; a grant no longer open does not say where to connect."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot import blocks
from jitcore.domain import Entry, EventKind, GrantEvent, GrantView, Status
from jitcore.policy import AzureFirewall, AzureLocation, PortPolicy, Target
from tests.unit.test_blocks_limits import assert_within_slack_limits, texts

T0 = datetime(2024, 5, 1, 14, 0, tzinfo=UTC)
REQUESTER, APPROVER = "U0ALICE", "U0BOB"
ENTRY = Entry("20.30.40.50", 50007, "10.1.0.4", 22)
# As mrkdwn: `>` and `<` escaped, inside code spans.
CONNECT = "Connect to `20.30.40.50:50007 -&gt; 10.1.0.4:22`"
SSH = "`ssh -p 50007 &lt;user&gt;@20.30.40.50`"
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
FIREWALL = AzureFirewall(subscription_id=SUBSCRIPTION, name="fw-hub", resource_group="rg-hub",
                         public_ip="20.30.40.50", mapped_ports=(50000, 50099))
BEHIND_FIREWALL = AzureLocation(subscription_id=SUBSCRIPTION, resource_group="rg-web",
                                network_security_group=None, destination="10.1.0.4",
                                firewall=FIREWALL)
WEB = Target(
    name="web-vm", location=BEHIND_FIREWALL,
    ports={"ssh": PortPolicy("ssh", 22), "rdp": PortPolicy("rdp", 3389)},
    requesters=("*",), approvers=(APPROVER,), max_duration=timedelta(hours=3),
    approval_timeout=timedelta(minutes=30),
)
OPEN = GrantView(
    id=42, status=Status.ACTIVE, requester=REQUESTER, target="web-vm", cloud="azure",
    service="ssh", port=22, protocol="tcp", source="203.0.113.7/32",
    duration=timedelta(minutes=30), reason="fix replication", created_at=T0,
    decided_by=APPROVER, decided_at=T0 + timedelta(minutes=2),
    opened_at=T0 + timedelta(minutes=3), expires_at=T0 + timedelta(minutes=33),
    rule_ref="jit-42", entry=ENTRY,
)
WITHOUT = dataclasses.replace(OPEN, entry=None)
RDP = dataclasses.replace(OPEN, service="rdp", port=3389,
                          entry=Entry("20.30.40.50", 50008, "10.1.0.4", 3389))
CLOSED = dataclasses.replace(OPEN, status=Status.CLOSED, close_reason="expired",
                             closed_at=T0 + timedelta(minutes=33))


def opened(view: GrantView) -> GrantEvent:
    return GrantEvent(EventKind.OPENED, view, "jit", T0 + timedelta(minutes=3))


def all_text(payload: Any) -> str:
    return "\n".join(texts(payload))


# ---- /jit list ----------------------------------------------------------------------------

def list_line(view: GrantView) -> str:
    message = blocks.grants_message([view])
    assert_within_slack_limits(message, blocks.MAX_MESSAGE_BLOCKS)
    return str(message["blocks"][1]["text"]["text"])


def test_list_says_where_to_connect_and_the_ssh_command() -> None:
    assert list_line(OPEN) == ("*#42* ssh tcp/22 on *web-vm* from `203.0.113.7/32` · "
                               f"open until 14:33 UTC · {CONNECT} with {SSH}")


def test_list_gives_the_ssh_command_for_ssh_only() -> None:
    assert list_line(RDP) == ("*#42* rdp tcp/3389 on *web-vm* from `203.0.113.7/32` · "
                              "open until 14:33 UTC · Connect to "
                              "`20.30.40.50:50008 -&gt; 10.1.0.4:3389`")


def test_list_without_an_entry_reads_as_before() -> None:
    assert list_line(WITHOUT) == ("*#42* ssh tcp/22 on *web-vm* from `203.0.113.7/32` · "
                                  "open until 14:33 UTC")


@pytest.mark.parametrize("status", [Status.CLOSING, Status.CLOSED, Status.CLOSE_FAILED])
def test_list_says_nothing_of_connecting_once_the_grant_is_closing(status: Status) -> None:
    line = list_line(dataclasses.replace(CLOSED, status=status))
    assert "Connect" not in line and "ssh -p" not in line


def test_a_long_list_with_entries_fits_in_one_message() -> None:
    views = [dataclasses.replace(OPEN, id=n, target="t" * 63,
                                 entry=Entry("2001:db8::" + f"{n:x}", 50000 + n,
                                             "fd00:1:2:3:4:5:6:7", 22))
             for n in range(1, 201)]
    message = blocks.grants_message(views)
    assert_within_slack_limits(message, blocks.MAX_MESSAGE_BLOCKS)
    assert "[2001:db8::1]:50001 -&gt; [fd00:1:2:3:4:5:6:7]:22" in all_text(message)
    assert texts(message["blocks"][-1])[0].startswith("…and ")


# ---- the requester's DM when the grant opens ----------------------------------------------

def test_the_opened_dm_says_where_to_connect() -> None:
    dm = blocks.dm_for(opened(OPEN))
    assert dm is not None
    assert_within_slack_limits(dm, blocks.MAX_MESSAGE_BLOCKS)
    (section,) = dm["blocks"]
    assert section["text"]["text"] == (
        ":unlock: *#42* is open: ssh tcp/22 on *web-vm* from `203.0.113.7/32` until "
        f"14:33 UTC. {CONNECT} with {SSH}.\nClose it early with `/jit revoke 42`.")
    assert dm["text"] == ("Access #42 is open until 14:33 UTC: connect to "
                          "20.30.40.50:50007 -&gt; 10.1.0.4:22")


def test_the_opened_dm_without_an_entry_reads_as_before() -> None:
    dm = blocks.dm_for(opened(WITHOUT))
    assert dm is not None
    assert dm["blocks"][0]["text"]["text"] == (
        ":unlock: *#42* is open: ssh tcp/22 on *web-vm* from `203.0.113.7/32` until "
        "14:33 UTC. Close it early with `/jit revoke 42`.")
    assert dm["text"] == "Access #42 is open until 14:33 UTC"


def test_the_closed_dm_does_not_say_where_to_connect() -> None:
    dm = blocks.dm_for(GrantEvent(EventKind.CLOSED, CLOSED, "jit", T0 + timedelta(minutes=33)))
    assert dm is not None and "Connect" not in all_text(dm) and "connect" not in dm["text"]


# ---- the approval card once the grant is open ---------------------------------------------

def test_the_card_says_where_to_connect_once_open() -> None:
    card = blocks.card_update(opened(OPEN), WEB)
    assert_within_slack_limits(card, blocks.MAX_MESSAGE_BLOCKS)
    assert card["blocks"][-2]["text"]["text"] == (
        "*Decided by <@U0BOB> at 14:02 UTC:* open until 14:33 UTC")
    assert card["blocks"][-1]["text"]["text"] == f"{CONNECT} with {SSH}"


def test_the_card_without_an_entry_ends_with_the_outcome() -> None:
    with_entry = blocks.card_update(opened(OPEN), WEB)
    card = blocks.card_update(opened(WITHOUT), WEB)
    assert card["blocks"] == with_entry["blocks"][:-1]
    assert "Connect" not in all_text(card)


def test_the_closed_card_does_not_say_where_to_connect() -> None:
    card = blocks.card_update(GrantEvent(EventKind.CLOSED, CLOSED, "jit", T0), WEB)
    assert card["blocks"][-1]["text"]["text"].endswith("closed (expired)")
    assert "Connect" not in all_text(card)


def test_the_card_shows_the_dnat_rule_approving_adds() -> None:
    card = blocks.approval_card(dataclasses.replace(OPEN, status=Status.PENDING, entry=None),
                                WEB)
    assert_within_slack_limits(card, blocks.MAX_MESSAGE_BLOCKS)
    assert ("*Approve adds:* DNAT tcp from `203.0.113.7/32` to `20.30.40.50` on the lowest "
            "free port in 50000-50099, forwarded to `10.1.0.4:22`, in firewall `fw-hub` "
            "(azure rg-hub) for 30m, as rule `jit-42`") in all_text(card)


def test_the_dnat_rule_names_the_policy_and_the_nsg_rule_behind_it() -> None:
    location = dataclasses.replace(
        BEHIND_FIREWALL, network_security_group="nsg-web",
        firewall=dataclasses.replace(FIREWALL, policy="fwp-hub", source_range="10.0.0.0/26"))
    change = blocks.rule_change(OPEN, dataclasses.replace(WEB, location=location))
    assert "in firewall `fw-hub` (policy `fwp-hub`) (azure rg-hub)" in change
    assert change.endswith("as rule `jit-42`, and an allow from the firewall's subnet "
                           "`10.0.0.0/26` in NSG `nsg-web`")


# ---- the App Home ---------------------------------------------------------------------------

def test_home_says_where_to_connect_under_an_active_grant() -> None:
    view = blocks.home_view([OPEN, dataclasses.replace(WITHOUT, id=43)], [], [])
    assert_within_slack_limits(view, blocks.MAX_VIEW_BLOCKS)
    first, second = (b for b in view["blocks"] if b.get("block_id", "").startswith(
        "jit_home_active:"))
    assert first["text"]["text"].endswith(f"open until 14:33 UTC\n{CONNECT} with {SSH}")
    assert second["text"]["text"].endswith("open until 14:33 UTC")
