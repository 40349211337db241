"""The pure decisions in jitcore.policy, on hand-built policies (no file involved)."""

from __future__ import annotations

import ipaddress
from datetime import timedelta

import pytest

from jitcore.domain import Protocol
from jitcore.policy import (
    ANY_V4,
    ANY_V6,
    AutoApprove,
    AwsLocation,
    AzureLocation,
    Policy,
    PortPolicy,
    Reason,
    RequestCheck,
    Target,
    check_approver,
    check_auto_approve,
    check_request,
    check_source,
    names,
    resolve_port,
)

NO_GROUPS: frozenset[str] = frozenset()
SSH = PortPolicy("ssh", 22, max_duration=timedelta(hours=1))
RDP = PortPolicy("rdp", 3389)
DNS = PortPolicy("dns", 53, Protocol.UDP)


def make_target(
    name: str = "prod-db",
    ports: tuple[PortPolicy, ...] = (SSH, RDP, DNS),
    requesters: tuple[str, ...] = ("*",),
    approvers: tuple[str, ...] = ("U0LEAD1", "@sre-leads"),
    max_duration: timedelta = timedelta(hours=3),
    auto_approve: AutoApprove | None = None,
) -> Target:
    return Target(
        name=name,
        location=AwsLocation("us-east-1", security_group_id="sg-0abc1234"),
        ports={p.name: p for p in ports},
        requesters=requesters,
        approvers=approvers,
        max_duration=max_duration,
        approval_timeout=timedelta(hours=1),
        auto_approve=auto_approve,
    )


def make_policy(*targets: Target) -> Policy:
    return Policy(targets={t.name: t for t in targets or (make_target(),)})


def request(
    policy: Policy,
    *,
    requester: str = "U0ALICE",
    groups: frozenset[str] = NO_GROUPS,
    target: str = "prod-db",
    port: str = "ssh",
    duration: timedelta = timedelta(minutes=30),
    source: str = "203.0.113.7",
) -> RequestCheck:
    return check_request(policy, requester, groups, target, port, duration, source)


# --- who may request ---------------------------------------------------------------------


def test_anyone_may_request_when_requesters_is_star() -> None:
    check = request(make_policy())
    assert check.decision.allowed
    assert check.decision.reason is Reason.ALLOWED
    assert check.target is not None and check.target.name == "prod-db"
    assert check.port is SSH
    assert check.source == ipaddress.ip_network("203.0.113.7/32")
    assert check.duration == timedelta(minutes=30)


def test_a_named_requester_is_allowed_and_others_refused() -> None:
    policy = make_policy(make_target(requesters=("U0ALICE",)))
    assert request(policy, requester="U0ALICE").decision.allowed
    refused = request(policy, requester="U0MALLORY").decision
    assert not refused
    assert refused.reason is Reason.NOT_A_REQUESTER
    assert refused.detail == "you may not request access to prod-db"
    assert request(policy, requester="U0MALLORY").target is None


def test_usergroup_membership_makes_a_requester() -> None:
    policy = make_policy(make_target(requesters=("@dbas",)))
    assert request(policy, requester="U0BOB", groups=frozenset({"@dbas"})).decision.allowed
    refused = request(policy, requester="U0BOB", groups=frozenset({"@web"})).decision
    assert refused.reason is Reason.NOT_A_REQUESTER


def test_names_matches_ids_groups_and_star() -> None:
    assert names("U1", ("U1",), NO_GROUPS)
    assert names("U1", ("@g",), frozenset({"@g"}))
    assert names("U1", ("*",), NO_GROUPS)
    assert not names("U1", ("U2", "@g"), frozenset({"@h"}))
    assert not names("U1", (), NO_GROUPS)


# --- what may be requested ----------------------------------------------------------------


def test_unknown_target_names_the_known_ones() -> None:
    policy = make_policy(make_target("prod-db"), make_target("web-vm"))
    decision = request(policy, target="staging").decision
    assert not decision.allowed
    assert decision.reason is Reason.UNKNOWN_TARGET
    assert decision.detail == "unknown target 'staging'; known targets: prod-db, web-vm"


def test_target_names_are_case_insensitive() -> None:
    assert request(make_policy(), target=" PROD-DB ").decision.allowed


def test_unknown_port_lists_what_the_target_offers() -> None:
    decision = request(make_policy(), port="winrm").decision
    assert decision.reason is Reason.UNKNOWN_PORT
    assert decision.detail == (
        "prod-db has no port 'winrm'; it offers ssh 22/tcp, rdp 3389/tcp, dns 53/udp"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ssh", SSH),
        ("SSH", SSH),
        (" rdp ", RDP),
        ("22", SSH),
        ("22/tcp", SSH),
        ("3389", RDP),
        ("53/udp", DNS),
        ("53", DNS),
        ("22/udp", None),
        ("53/tcp", None),
        ("2222", None),
        ("winrm", None),
        ("²", None),
        ("", None),
    ],
)
def test_resolve_port_by_name_number_or_number_and_protocol(
    text: str, expected: PortPolicy | None
) -> None:
    assert resolve_port(make_target(), text) is expected


def test_a_well_known_name_finds_the_port_under_another_name() -> None:
    admin = PortPolicy("admin", 22)
    assert resolve_port(make_target(ports=(admin,)), "ssh") is admin


# --- how long ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("port", "target_max", "duration", "allowed", "detail"),
    [
        # the port's own cap (1h) is below the target's (3h)
        (SSH, timedelta(hours=3), timedelta(hours=1), True, ""),
        (SSH, timedelta(hours=3), timedelta(hours=1, seconds=1), False,
         "1h1s is longer than the 1h allowed for ssh on prod-db"),
        # no port cap: the target's (the defaults, once resolved) applies
        (RDP, timedelta(hours=3), timedelta(hours=3), True, ""),
        (RDP, timedelta(hours=3), timedelta(hours=4), False,
         "4h is longer than the 3h allowed for rdp on prod-db"),
        # the target's cap is below the port's
        (SSH, timedelta(minutes=20), timedelta(minutes=30), False,
         "30m is longer than the 20m allowed for ssh on prod-db"),
        # nothing is ever longer than 24h, whatever the objects say
        (PortPolicy("rdp", 3389, max_duration=timedelta(hours=48)), timedelta(hours=48),
         timedelta(hours=25), False, "1d1h is longer than the 1d allowed for rdp on prod-db"),
    ],
)
def test_duration_caps(
    port: PortPolicy, target_max: timedelta, duration: timedelta, allowed: bool, detail: str
) -> None:
    policy = make_policy(make_target(ports=(port,), max_duration=target_max))
    decision = request(policy, port=port.name, duration=duration).decision
    assert decision.allowed is allowed
    assert decision.detail == detail
    if not allowed:
        assert decision.reason is Reason.DURATION_TOO_LONG


def test_port_max_duration_is_the_smallest_limit() -> None:
    target = make_target(max_duration=timedelta(hours=2))
    assert target.port_max_duration(SSH) == timedelta(hours=1)
    assert target.port_max_duration(RDP) == timedelta(hours=2)


@pytest.mark.parametrize("duration", [timedelta(0), timedelta(seconds=-1)])
def test_a_duration_must_be_positive(duration: timedelta) -> None:
    decision = request(make_policy(), duration=duration).decision
    assert decision.reason is Reason.DURATION_INVALID
    assert decision.detail == "the duration must be positive"


# --- from where -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("203.0.113.7", "203.0.113.7/32"),
        ("203.0.113.7/32", "203.0.113.7/32"),
        ("2001:DB8::7", "2001:db8::7/128"),
        ("2001:db8:0::7/128", "2001:db8::7/128"),
    ],
)
def test_a_single_address_is_accepted_in_canonical_form(text: str, canonical: str) -> None:
    decision, source = check_source(RDP, text)
    assert decision.allowed
    assert str(source) == canonical


@pytest.mark.parametrize("text", ["0.0.0.0/0", "::/0"])
def test_anywhere_is_always_refused(text: str) -> None:
    wide = PortPolicy("rdp", 3389, widest_prefix_v4=8, widest_prefix_v6=16)
    decision, source = check_source(wide, text)
    assert decision.reason is Reason.SOURCE_ANYWHERE
    assert decision.detail == (
        f"{text} would open rdp 3389/tcp to the whole internet; give your own address"
    )
    assert source is None


def test_a_range_is_refused_by_default() -> None:
    decision, source = check_source(RDP, "203.0.113.0/24")
    assert decision.reason is Reason.SOURCE_TOO_WIDE
    assert decision.detail == (
        "203.0.113.0/24 is wider than rdp 3389/tcp allows: give a single address"
    )
    assert source is None


def test_a_range_up_to_the_widest_prefix_is_accepted() -> None:
    port = PortPolicy("rdp", 3389, widest_prefix_v4=28, widest_prefix_v6=124)
    assert check_source(port, "203.0.113.16/28")[0].allowed
    assert check_source(port, "2001:db8::10/124")[0].allowed
    too_wide, _ = check_source(port, "203.0.113.0/24")
    assert too_wide.detail == (
        "203.0.113.0/24 is wider than rdp 3389/tcp allows: give a /28 or narrower"
    )


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("somewhere", "'somewhere' is not an IPv4 or IPv6 address"),
        ("", "a source address is required, e.g. 203.0.113.7"),
        ("203.0.113.7/24", "'203.0.113.7/24' has host bits set; did you mean 203.0.113.0/24?"),
    ],
)
def test_an_unparseable_source_is_refused(text: str, detail: str) -> None:
    decision, source = check_source(RDP, text)
    assert decision.reason is Reason.SOURCE_INVALID
    assert decision.detail == detail
    assert source is None


def test_a_private_address_is_refused_when_only_anywhere_is_allowed() -> None:
    decision, _ = check_source(RDP, "10.1.2.3")
    assert decision.reason is Reason.SOURCE_PRIVATE
    assert decision.detail == (
        "10.1.2.3/32 is a private address; rdp 3389/tcp allows private sources only where "
        "allowed_sources lists a private range"
    )
    assert check_source(RDP, "fd00::1")[0].reason is Reason.SOURCE_PRIVATE
    assert check_source(RDP, "100.64.0.1")[0].reason is Reason.SOURCE_PRIVATE


def test_a_private_address_is_accepted_where_a_private_range_is_listed() -> None:
    port = PortPolicy("ssh", 22, allowed_sources=(ipaddress.ip_network("10.0.0.0/8"), ANY_V4))
    decision, source = check_source(port, "10.1.2.3")
    assert decision.allowed
    assert source == ipaddress.ip_network("10.1.2.3/32")


def test_a_wide_public_range_does_not_admit_private_addresses() -> None:
    # 0.0.0.0/1 holds 10.0.0.0/8 but is not a private range: it says "most of the internet".
    port = PortPolicy("ssh", 22, allowed_sources=(ipaddress.ip_network("0.0.0.0/1"),))
    assert check_source(port, "10.1.2.3")[0].reason is Reason.SOURCE_PRIVATE
    assert check_source(port, "8.8.8.8")[0].allowed


def test_a_source_outside_allowed_sources_is_refused() -> None:
    port = PortPolicy("ssh", 22, allowed_sources=(ipaddress.ip_network("198.51.100.0/24"),))
    assert check_source(port, "198.51.100.9")[0].allowed
    decision, _ = check_source(port, "203.0.113.7")
    assert decision.reason is Reason.SOURCE_NOT_ALLOWED
    assert decision.detail == (
        "203.0.113.7/32 is outside the sources allowed for ssh 22/tcp (198.51.100.0/24)"
    )
    # an IPv4-only list admits no IPv6 source
    assert check_source(port, "2001:db8::1")[0].reason is Reason.SOURCE_NOT_ALLOWED


@pytest.mark.parametrize(
    "text",
    ["127.0.0.1", "::1", "169.254.10.10", "fe80::1", "224.0.0.1", "240.0.0.1",
     "255.255.255.255", "0.0.0.0", "::ffff:203.0.113.7"],
)
def test_loopback_and_other_unroutable_sources_are_refused(text: str) -> None:
    decision, _ = check_source(RDP, text)
    assert decision.reason is Reason.SOURCE_UNROUTABLE
    assert decision.detail.endswith("is not a routable source address")


def test_check_request_refuses_a_bad_source_after_the_other_checks() -> None:
    check = request(make_policy(), source="0.0.0.0/0")
    assert check.decision.reason is Reason.SOURCE_ANYWHERE
    assert check.target is None and check.source is None


def test_default_port_policy_allows_any_address_of_either_family() -> None:
    assert RDP.allowed_sources == (ANY_V4, ANY_V6)


# --- who may approve --------------------------------------------------------------------


def test_self_approval_is_refused_even_for_an_approver() -> None:
    target = make_target(approvers=("U0LEAD1",))
    decision = check_approver(target, "U0LEAD1", "U0LEAD1", NO_GROUPS)
    assert decision.reason is Reason.SELF_APPROVAL
    assert decision.detail == "you cannot approve your own request"


def test_a_non_approver_is_refused() -> None:
    decision = check_approver(make_target(), "U0ALICE", "U0BOB", frozenset({"@web"}))
    assert not decision
    assert decision.reason is Reason.NOT_AN_APPROVER
    assert decision.detail == "you are not an approver for prod-db"


def test_named_and_group_approvers_are_accepted() -> None:
    target = make_target(approvers=("U0LEAD1", "@sre-leads"))
    assert check_approver(target, "U0ALICE", "U0LEAD1", NO_GROUPS).allowed
    by_group = check_approver(target, "U0ALICE", "U0CAROL", frozenset({"@sre-leads"}))
    assert by_group.allowed
    assert by_group.reason is Reason.ALLOWED


# --- approved by policy -----------------------------------------------------------------


def auto_target(max_duration: timedelta | None = timedelta(minutes=30)) -> Target:
    rule = AutoApprove(("U0ONCALL", "@oncall"), max_duration)
    return make_target(approvers=(), auto_approve=rule)


def test_auto_approve_within_its_max() -> None:
    decision = check_auto_approve(auto_target(), RDP, "U0ONCALL", timedelta(minutes=30), NO_GROUPS)
    assert decision.allowed
    assert decision.reason is Reason.AUTO_APPROVED
    group = check_auto_approve(auto_target(), RDP, "U0X", timedelta(minutes=5),
                               frozenset({"@oncall"}))
    assert group.allowed


def test_auto_approve_over_its_max_needs_an_approver() -> None:
    decision = check_auto_approve(auto_target(), RDP, "U0ONCALL", timedelta(minutes=31), NO_GROUPS)
    assert not decision.allowed
    assert decision.reason is Reason.NOT_AUTO_APPROVED
    assert decision.detail == "longer than the 30m that is approved automatically"


def test_auto_approve_never_goes_past_the_port_cap() -> None:
    decision = check_auto_approve(auto_target(max_duration=None), SSH, "U0ONCALL",
                                  timedelta(hours=2), NO_GROUPS)
    assert not decision.allowed
    assert decision.detail == "longer than the 1h that is approved automatically"


def test_auto_approve_is_only_for_its_users() -> None:
    decision = check_auto_approve(auto_target(), RDP, "U0ALICE", timedelta(minutes=5), NO_GROUPS)
    assert decision.reason is Reason.NOT_AUTO_APPROVED
    assert decision.detail == "needs an approver"
    assert not check_auto_approve(make_target(), RDP, "U0ONCALL", timedelta(minutes=5), NO_GROUPS)


# --- the policy as a whole ----------------------------------------------------------------


def test_group_handles_collects_every_usergroup() -> None:
    policy = make_policy(
        make_target("a", requesters=("@dbas", "U1"), approvers=("@sre-leads",)),
        make_target("b", approvers=("U2",), auto_approve=AutoApprove(("@oncall",))),
    )
    assert policy.group_handles() == frozenset({"@dbas", "@sre-leads", "@oncall"})


def test_target_cloud_and_resource() -> None:
    aws = make_target()
    azure = Target("web-vm", AzureLocation("sub", "rg", "nsg", "10.0.1.4"), {}, ("*",), ("U1",),
                   timedelta(hours=1), timedelta(hours=1))
    assert aws.cloud == "aws"
    assert azure.cloud == "azure"
    assert aws.location.resource == "aws us-east-1 sg-0abc1234"
    assert azure.location.resource == "azure sub/rg/nsg -> 10.0.1.4"
