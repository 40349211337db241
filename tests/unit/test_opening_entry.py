"""A grant opened through a DNAT keeps where to connect: the provider's answer is stored with
the rule, read back with the grant, written in the audit link, and carried by the OPENED
event into the posts it owes Slack (the card and the requester's DM say it)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select

from bot import blocks
from jitcore.domain import Entry, EventKind, GrantEvent, Status
from jitcore.outbox import Post, event_from_json
from jitcore.policy import AzureLocation
from jitcore.ports import OpenedRule, Provider, RuleSpec
from jitcore.service import JitService
from jitcore.store import Store
from jitcore.store.models import OutboxPost, RuleHandle
from tests.fakes.memory_provider import MemoryProvider
from tests.support.fixtures import ManualClock, RecordingNotifier
from tests.support.lifecycle import ARM_ENDPOINT, SETTINGS, SUBSCRIPTION, World, open_world
from tests.support.policies import REQUESTER, azure_policy

PUBLIC_IP = "20.30.40.50"
MAPPED_PORTS = (50000, 50009)


class DnatProvider(MemoryProvider):
    """The in-memory firewall answering as a firewall's DNAT does: each rule takes a mapped
    port of the public address (its slot), forwarded to the target's destination."""

    def open_rule(self, spec: RuleSpec) -> OpenedRule:
        opened = super().open_rule(spec)
        location = spec.target.location
        assert isinstance(location, AzureLocation) and spec.slot is not None
        return replace(opened, entry=Entry(PUBLIC_IP, spec.slot, location.destination,
                                           spec.port.port))


@pytest.fixture
def world(sqlite_template: Path, tmp_path: Path) -> Iterator[World]:
    path = tmp_path / "jit.db"
    shutil.copy(sqlite_template, path)
    policy = azure_policy(ARM_ENDPOINT, SUBSCRIPTION)
    provider = DnatProvider("azure", slots=MAPPED_PORTS)
    port: Provider = provider
    store = Store.from_url(f"sqlite:///{path}")
    clock, notifier = ManualClock(), RecordingNotifier()
    try:
        yield World(JitService(store, policy, {"azure": port}, notifier, clock,
                               settings=SETTINGS), store, clock, notifier, provider, policy)
    finally:
        store.dispose()


def owed(world: World, grant_id: int, kind: EventKind, post: Post) -> GrantEvent:
    """The event of this kind as the outbox row owing `post` keeps it."""
    with world.store.read() as session:
        payloads = session.scalars(select(OutboxPost.payload).where(
            OutboxPost.grant_id == grant_id, OutboxPost.post == post.value)).all()
    (event,) = [e for e in map(event_from_json, payloads) if e.kind is kind]
    return event


def test_an_opened_grant_says_where_to_connect(world: World) -> None:
    gid = world.active()
    entry = Entry(PUBLIC_IP, 50000, "10.0.1.4", 22)
    assert world.service.get(gid).entry == entry
    assert [g.entry for g in world.service.grants(requester=REQUESTER)] == [entry]
    with world.store.read() as session:
        assert session.scalars(select(RuleHandle.entry)).all() == [
            "20.30.40.50:50000 -> 10.0.1.4:22"]
    assert world.link(gid, "opened")["details"]["entry"] == "20.30.40.50:50000 -> 10.0.1.4:22"

    (told,) = [e for e in world.notifier.events if e.kind is EventKind.OPENED]
    assert (told.grant.entry, told.grant.rule_ref) == (entry, f"jit-{gid}")
    dm = blocks.dm_for(owed(world, gid, EventKind.OPENED, Post.DM))
    assert dm is not None
    assert ("Connect to `20.30.40.50:50000 -&gt; 10.0.1.4:22` with "
            "`ssh -p 50000 &lt;user&gt;@20.30.40.50`") in dm["blocks"][0]["text"]["text"]
    card = blocks.card_update(owed(world, gid, EventKind.OPENED, Post.CARD_UPDATE),
                              world.target)
    assert card["blocks"][-1]["text"]["text"].startswith(
        "Connect to `20.30.40.50:50000 -&gt; 10.0.1.4:22`")
    audit = blocks.audit_line(owed(world, gid, EventKind.OPENED, Post.REPLY))
    assert audit.endswith(f"rule jit-{gid} by jit")


def test_each_grant_has_its_own_mapped_port(world: World) -> None:
    first = world.active()
    second = world.active(port="rdp", source="198.51.100.9")
    assert world.service.get(first).entry == Entry(PUBLIC_IP, 50000, "10.0.1.4", 22)
    assert world.service.get(second).entry == Entry(PUBLIC_IP, 50001, "10.0.1.4", 3389)


def test_a_closed_grant_keeps_its_entry_but_says_nothing_of_connecting(world: World) -> None:
    gid = world.active()
    closed = world.service.revoke(gid, REQUESTER)
    assert closed.status is Status.CLOSED
    assert world.service.get(gid).entry == Entry(PUBLIC_IP, 50000, "10.0.1.4", 22)
    dm = blocks.dm_for(owed(world, gid, EventKind.CLOSED, Post.DM))
    assert dm is not None and "Connect" not in dm["blocks"][0]["text"]["text"]
    (line,) = blocks.grants_message([world.service.get(gid)])["blocks"][1:]
    assert "closed at" in line["text"]["text"] and "Connect" not in line["text"]["text"]


def test_a_rule_without_an_entry_stores_and_says_none(sqlite_template: Path,
                                                      tmp_path: Path) -> None:
    with open_world(sqlite_template, tmp_path, cloud="azure", slots=(100, 199)) as plain:
        gid = plain.active()
        assert plain.service.get(gid).entry is None
        assert "entry" not in plain.link(gid, "opened")["details"]
        event = owed(plain, gid, EventKind.OPENED, Post.DM)
        assert (event.grant.entry, event.grant.rule_ref) == (None, f"jit-{gid}")
        dm = blocks.dm_for(event)
        assert dm is not None and "Connect" not in dm["blocks"][0]["text"]["text"]
