"""Where the requester connects through a DNAT (jitcore.domain.Entry): how it reads, the
ssh command, and its text form for the database, which reads back exactly or not at all."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jitcore.domain import Entry

ENTRY = Entry(host="20.30.40.50", port=50007, to_host="10.1.0.4", to_port=22)
BUDGET = settings(max_examples=300, deadline=None)


def test_reads_as_where_to_connect_and_where_it_goes() -> None:
    assert str(ENTRY) == "20.30.40.50:50007 -> 10.1.0.4:22"
    assert ENTRY.to_text() == "20.30.40.50:50007 -> 10.1.0.4:22"
    assert ENTRY.ssh_command() == "ssh -p 50007 <user>@20.30.40.50"
    assert ENTRY.ssh_command("azureuser") == "ssh -p 50007 azureuser@20.30.40.50"


def test_ipv6_hosts_are_bracketed_except_in_the_ssh_command() -> None:
    entry = Entry("2001:db8::1", 50007, "fd00:1::4", 22)
    assert str(entry) == "[2001:db8::1]:50007 -> [fd00:1::4]:22"
    assert ssh_host(entry.ssh_command()) == "2001:db8::1"  # ssh -p takes it bare
    assert Entry.from_text(entry.to_text()) == entry


def ssh_host(command: str) -> str:
    return command.rsplit("@", 1)[1]


@pytest.mark.parametrize("entry", [
    ENTRY,
    Entry("2001:db8::1", 1, "10.1.0.4", 65535),
    Entry("20.30.40.50", 50000, "::ffff:10.1.0.4", 3389),
    Entry("fw.example.com", 50099, "vm-1.internal", 5986),
])
def test_text_reads_back_exactly(entry: Entry) -> None:
    text = entry.to_text()
    assert Entry.from_text(text) == entry
    assert Entry.from_text(text).to_text() == text  # type: ignore[union-attr]


addresses = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str)
ports = st.integers(min_value=1, max_value=65535)


@BUDGET
@given(addresses, ports, addresses, ports)
def test_any_addresses_and_ports_read_back_exactly(host: str, port: int, to_host: str,
                                                   to_port: int) -> None:
    entry = Entry(host, port, to_host, to_port)
    assert Entry.from_text(entry.to_text()) == entry
    assert len(entry.to_text()) <= 200  # rule_handles.entry is String(200)


def test_the_longest_hosts_fit_their_column() -> None:
    name = ".".join(["a" * 19] * 4)  # 79 characters, a DNS name at the limit
    entry = Entry(name + "b", 65535, "ffff:" * 7 + "ffff", 65535)
    assert len(entry.to_text()) <= 200 and Entry.from_text(entry.to_text()) == entry
    with pytest.raises(ValueError, match="not an IP address or a DNS name"):
        Entry(name + "bc", 1, "10.1.0.4", 22)


@pytest.mark.parametrize("text", [
    "", "garbage", "20.30.40.50", "20.30.40.50:50007", "20.30.40.50:50007 ->",
    "20.30.40.50:50007->10.1.0.4:22",  # the spaces are part of the form
    " 20.30.40.50:50007 -> 10.1.0.4:22", "20.30.40.50:50007 -> 10.1.0.4:22\n",
    "20.30.40.50:0 -> 10.1.0.4:22", "20.30.40.50:50007 -> 10.1.0.4:65536",
    "20.30.40.50:-1 -> 10.1.0.4:22", "20.30.40.50:x -> 10.1.0.4:22",
    "20.30.40.50:050007 -> 10.1.0.4:22", "20.30.40.50:50007 -> 10.1.0.4:022",
    "2001:db8::1:50007 -> 10.1.0.4:22",  # an IPv6 host must be bracketed
    "[20.30.40.50]:50007 -> 10.1.0.4:22",  # and only an IPv6 host
    "[2001:db8::zz]:50007 -> 10.1.0.4:22", "[fe80::1%eth0]:50007 -> 10.1.0.4:22",
    "[]:50007 -> 10.1.0.4:22", "-fw-:50007 -> 10.1.0.4:22", "a_b:50007 -> 10.1.0.4:22",
    "20.30.40.50:50007 -> 10.1.0.4:22 -> 10.2.0.4:22", "\x00:1 -> \x00:2",
])
def test_garbage_reads_as_none(text: str) -> None:
    assert Entry.from_text(text) is None


@BUDGET
@given(st.text(max_size=120))
def test_any_text_reads_as_the_entry_that_writes_it_or_as_none(text: str) -> None:
    entry = Entry.from_text(text)
    assert entry is None or entry.to_text() == text


@pytest.mark.parametrize(("host", "port", "to_host", "to_port"), [
    ("", 50007, "10.1.0.4", 22),
    ("20.30.40.50", 0, "10.1.0.4", 22),
    ("20.30.40.50", 50007, "10.1.0.4", 70000),
    ("20.30.40.50", True, "10.1.0.4", 22),
    ("20.30.40.50 ", 50007, "10.1.0.4", 22),
    ("fe80::1%eth0", 50007, "10.1.0.4", 22),
    ("20.30.40.50", 50007, "10.1.0.4/32", 22),
])
def test_what_cannot_be_written_back_is_refused(host: str, port: int, to_host: str,
                                                to_port: int) -> None:
    with pytest.raises(ValueError, match=r"not an IP address or a DNS name|not a TCP/UDP port"):
        Entry(host, port, to_host, to_port)


def test_is_a_value() -> None:
    assert Entry("20.30.40.50", 50007, "10.1.0.4", 22) == ENTRY
    assert len({ENTRY, Entry("20.30.40.50", 50007, "10.1.0.4", 22)}) == 1
    with pytest.raises(AttributeError):
        ENTRY.port = 1  # type: ignore[misc]
