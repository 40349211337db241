"""`/jit` text -> typed commands (bot.grammar)."""

from __future__ import annotations

import dataclasses
import random
from datetime import timedelta

import pytest

from bot.grammar import (
    EXAMPLES,
    HELP_TEXT,
    Cancel,
    Command,
    Extend,
    Help,
    ListGrants,
    ListTargets,
    ParseError,
    Request,
    Revoke,
    parse,
)

MIN30 = timedelta(minutes=30)
REQUEST_EXAMPLE = "/jit ssh prod-db 30m from 203.0.113.7 fix replication"
NOT_A_DURATION = "is not a duration; use e.g. 90s, 30m, 2h, 1h30m or 1d"


def full(source: str = "203.0.113.7", reason: str = "fix replication", *,
         service: str = "ssh", target: str = "prod-db",
         duration: timedelta = MIN30) -> Request:
    return Request(service, target, duration, source, reason, ())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Help()),
        ("   \t\n ", Help()),
        ("\u00a0", Help()),
        ("help", Help()),
        ("HELP", Help()),
        ("  help \n", Help()),
        ("list", ListGrants()),
        ("List", ListGrants()),
        ("targets", ListTargets()),
        ("TARGETS\t", ListTargets()),
        ("revoke 42", Revoke(42)),
        ("revoke #42", Revoke(42)),
        ("REVOKE   #7", Revoke(7)),
        ("revoke 2147483647", Revoke(2**31 - 1)),  # the largest id the grants table holds
        ("cancel 3", Cancel(3)),
        ("Cancel #3", Cancel(3)),
        ("extend 42 30m", Extend(42, MIN30)),
        ("extend #42 2H", Extend(42, timedelta(hours=2))),
        ("extend 42 1h 30m", Extend(42, timedelta(hours=1, minutes=30))),
        ("extend 42 30 m", Extend(42, MIN30)),
    ],
)
def test_commands(text: str, expected: Command) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ssh prod-db 30m from 203.0.113.7 fix replication", full()),
        ("ssh prod-db from 203.0.113.7 30m fix replication", full()),
        ("from 203.0.113.7 ssh prod-db 30m fix replication", full()),
        ("ssh prod-db 30m fix replication from 203.0.113.7", full()),
        ("ssh prod-db 30m fix replication from 203.0.113.7.", full()),
        ("ssh prod-db 30m from 203.0.113.7", full(reason="")),
        ("ssh prod-db 30m from 203.0.113.7 reason: fix replication", full()),
        ("ssh prod-db 30m from 203.0.113.7 Reason:fix replication", full()),
        ("ssh prod-db 30m from 203.0.113.7 because fix replication", full()),
        ("ssh prod-db for 30m from 203.0.113.7 fix replication", full()),
        ("ssh prod-db 30m from 2001:db8::7 fix replication", full("2001:db8::7")),
        ("ssh prod-db 30m from 198.51.100.0/24 fix replication", full("198.51.100.0/24")),
        # Not validated here: jitcore.policy refuses it with its own reason.
        ("ssh prod-db 30m from my-laptop fix replication", full("my-laptop")),
        ("22 prod-db 1h30m from 203.0.113.7 x",
         full(reason="x", service="22", duration=timedelta(minutes=90))),
        ("winrm-https web-vm 1d from 203.0.113.7 patch",
         full(reason="patch", service="winrm-https", target="web-vm",
              duration=timedelta(days=1))),
        ("SSH Prod-DB 30M FROM 203.0.113.7 Fix Replication", full(reason="Fix Replication")),
        ("ssh prod-db 1h 30m from 203.0.113.7 fix replication",
         full(duration=timedelta(minutes=90))),
        ("ssh prod-db 30m from 203.0.113.7 fix the from field", full(reason="fix the from field")),
        ("ssh prod-db 30m from 203.0.113.7 copy from 10.0.0.5",
         full(reason="copy from 10.0.0.5")),
    ],
)
def test_request(text: str, expected: Request) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ssh", Request("ssh", None, None, None, "", ("target", "duration", "source"))),
        ("ssh prod-db", Request("ssh", "prod-db", None, None, "", ("duration", "source"))),
        ("ssh prod-db 30m", Request("ssh", "prod-db", MIN30, None, "", ("source",))),
        ("ssh prod-db 30m fix it", Request("ssh", "prod-db", MIN30, None, "fix it", ("source",))),
        ("ssh prod-db from 203.0.113.7",
         Request("ssh", "prod-db", None, "203.0.113.7", "", ("duration",))),
        ("ssh from 203.0.113.7",
         Request("ssh", None, None, "203.0.113.7", "", ("target", "duration"))),
        ("ssh prod-db reason: fix it",
         Request("ssh", "prod-db", None, None, "fix it", ("duration", "source"))),
        ("ssh because it broke",
         Request("ssh", None, None, None, "it broke", ("target", "duration", "source"))),
        ("reason: it broke",
         Request(None, None, None, None, "it broke",
                 ("service", "target", "duration", "source"))),
        ("from 203.0.113.7",
         Request(None, None, None, "203.0.113.7", "", ("service", "target", "duration"))),
        # Only an address-shaped word after a trailing `from` is a source.
        ("ssh prod-db 30m pull logs from staging",
         Request("ssh", "prod-db", MIN30, None, "pull logs from staging", ("source",))),
        ("ssh prod-db 30m copy from 10.0.0.5 to 10.0.0.6",
         Request("ssh", "prod-db", MIN30, None, "copy from 10.0.0.5 to 10.0.0.6", ("source",))),
        # An explicit `reason:` keeps everything after it as the reason.
        ("ssh prod-db 30m reason: copy from 10.0.0.5",
         Request("ssh", "prod-db", MIN30, None, "copy from 10.0.0.5", ("source",))),
    ],
)
def test_missing_parts_are_listed_not_refused(text: str, expected: Request) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ssh  prod-db\t30m \n from   203.0.113.7\n\nfix   replication", full()),
        ("ssh\u00a0prod-db\u202f30m\u2007from\u00a0203.0.113.7 fix\u00a0replication", full()),
        ("ssh prod\u200b-db 30m from 203.0.113.7 fix replication", full()),
        ("ssh prod-db 30m from <http://203.0.113.7|203.0.113.7> fix replication", full()),
        ("ssh prod-db 30m from <http://203.0.113.7> fix replication", full()),
        ("ssh prod-db 30m from <https://203.0.113.7:8443/x?y=1> fix replication", full()),
        ("ssh prod-db 30m from <http://[2001:db8::7]/> fix replication", full("2001:db8::7")),
        ("ssh prod-db 30m from <mailto:ops@example.com|ops@example.com> fix replication",
         full("ops@example.com")),
        ("ssh prod-db 30m from <mailto:ops@example.com> fix replication",
         full("ops@example.com")),
        ("ssh prod-db 30m fix replication from <http://203.0.113.7|203.0.113.7>.", full()),
        ("ssh <http://prod-db.example.com|prod-db.example.com> 30m from 203.0.113.7 x",
         full(reason="x", target="prod-db.example.com")),
        ("ssh prod-db 30m from 203.0.113.7, fix replication", full()),
        ("ssh prod-db 30m from \u201c203.0.113.7\u201d fix replication", full()),
        ("ssh prod-db 30m from \u2018203.0.113.7\u2019 fix replication", full()),
        ("ssh prod-db 30m from `203.0.113.7` fix replication", full()),
        ("ssh prod-db 30m from 203.0.113.7 it\u2019s \u201cbroken\u201d",
         full(reason="it's \"broken\"")),
        ("ssh prod-db 30m from 203.0.113.7 a &lt;b&gt; &amp;amp; c",
         full(reason="a <b> &amp; c")),
        ("ssh prod-db 30m from 203.0.113.7 with <@U0BOB|bob> and <@U0ANN> in <#C0OPS|ops>",
         full(reason="with @bob and @U0ANN in #ops")),
        ("ssh prod-db 30m from 203.0.113.7 <!here> <!subteam^S0SRE|@sre> see <https://x.io/1>",
         full(reason="@here @sre see https://x.io/1")),
    ],
)
def test_tolerates_what_slack_and_people_send(text: str, expected: Request) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message", "example"),
    [
        ("help me", "`help` takes nothing more; remove 'me'", "/jit help"),
        ("list all mine", "`list` takes nothing more; remove 'all mine'", "/jit list"),
        ("targets prod", "`targets` takes nothing more; remove 'prod'", "/jit targets"),
        ("revoke", "`revoke` needs a grant id, the number `/jit list` shows", "/jit revoke 42"),
        ("revoke abc",
         "'abc' is not a grant id; give a number such as 42 or #42 from `/jit list`",
         "/jit revoke 42"),
        ("revoke 0",
         "'0' is not a grant id; give a number such as 42 or #42 from `/jit list`",
         "/jit revoke 42"),
        ("revoke -4",
         "'-4' is not a grant id; give a number such as 42 or #42 from `/jit list`",
         "/jit revoke 42"),
        ("revoke \u0664\u0662",  # Arabic-Indic digits: isdigit() says yes, a database key no
         "'\u0664\u0662' is not a grant id; give a number such as 42 or #42 from `/jit list`",
         "/jit revoke 42"),
        ("revoke 9223372036854775808",
         "'9223372036854775808' is not a grant id; give a number such as 42 or #42 "
         "from `/jit list`", "/jit revoke 42"),
        ("revoke " + "9" * 5000,
         f"'{'9' * 40}…' is not a grant id; give a number such as 42 or #42 from `/jit list`",
         "/jit revoke 42"),
        ("revoke 42 now please", "`revoke` takes only a grant id; remove 'now please'",
         "/jit revoke 42"),
        ("cancel", "`cancel` needs a grant id, the number `/jit list` shows", "/jit cancel 42"),
        ("cancel #x",
         "'#x' is not a grant id; give a number such as 42 or #42 from `/jit list`",
         "/jit cancel 42"),
        ("extend", "`extend` needs a grant id, the number `/jit list` shows",
         "/jit extend 42 30m"),
        ("extend 30m",
         "'30m' is not a grant id; give a number such as 42 or #42 from `/jit list`",
         "/jit extend 42 30m"),
        ("extend 42", "`extend` needs a duration after the grant id, e.g. 30m",
         "/jit extend 42 30m"),
        ("extend 42 thirty", f"'thirty' {NOT_A_DURATION}", "/jit extend 42 30m"),
        ("extend 42 0m", "'0m' must be longer than zero", "/jit extend 42 30m"),
        ("extend 42 30m please", "`extend` takes a grant id and a duration; remove 'please'",
         "/jit extend 42 30m"),
        ("ssh prod-db thirty", f"'thirty' {NOT_A_DURATION}", REQUEST_EXAMPLE),
        ("ssh prod-db fix replication", f"'fix' {NOT_A_DURATION}", REQUEST_EXAMPLE),
        ("ssh prod-db 30", f"'30' {NOT_A_DURATION}", REQUEST_EXAMPLE),
        ("ssh prod-db 1h1h", "'1h1h' repeats the unit 'h'", REQUEST_EXAMPLE),
        ("ssh prod-db for", f"'for' {NOT_A_DURATION}", REQUEST_EXAMPLE),
        ("ssh prod-db " + "9" * 5000, f"'{'9' * 40}…' {NOT_A_DURATION}", REQUEST_EXAMPLE),
        ("ssh prod-db 30m from", "`from` needs an address, e.g. `from 203.0.113.7`",
         REQUEST_EXAMPLE),
        ("ssh prod-db 30m from .", "`from` needs an address, e.g. `from 203.0.113.7`",
         REQUEST_EXAMPLE),
        ("ssh prod-db 30m from reason: x", "`from` needs an address, e.g. `from 203.0.113.7`",
         REQUEST_EXAMPLE),
        ("ssh from 198.51.100.1 prod-db from 203.0.113.7 30m",
         "give one `from` address, not '198.51.100.1' and '203.0.113.7'", REQUEST_EXAMPLE),
    ],
)
def test_errors_say_what_was_wrong(text: str, message: str, example: str) -> None:
    assert parse(text) == ParseError(message, example)


def test_every_example_and_help_form_parses() -> None:
    kinds = {type(parse(example.removeprefix("/jit "))) for example, _ in EXAMPLES}
    assert kinds == {Help, ListGrants, ListTargets, Revoke, Extend, Cancel, Request}
    assert parse(EXAMPLES[0][0].removeprefix("/jit ")) == full()


def test_help_text_lists_every_form_and_is_mrkdwn_safe() -> None:
    for example, _ in EXAMPLES:
        assert f"`{example}`" in HELP_TEXT
    assert not set(HELP_TEXT) & set("<>&")
    assert "winrm-https" in HELP_TEXT


def test_commands_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        full().reason = "changed"  # type: ignore[misc]


NASTY = [
    "<", ">", "<>", "<|>", "<<<|>>>", "<@>", "<#>", "<!>", "<!^>", "&", "&amp;lt;", "#",
    "revoke #", "revoke ##42", "extend 42 <", "extend # #", "from", "from from", "from <>",
    "ssh prod-db 30m from <http://[::1>", "ssh prod-db 30m from http://[", "ssh x 1h from <|>",
    "ssh x 30m from mailto:", "ssh x 30m from ://", "\x00", "\u200b\u200b", "\ufeff help",
    "ssh x " + "1h" * 3000, "ssh x " + "1" * 6000 + "h", "extend 1 " + "9" * 6000,
    "ssh x 1d 1h 1m 1s 1d", "for", "ssh x for for for", "reason:", "because:", "\U0001F525" * 50,
    "ssh x 30m from " + "9" * 6000, "ssh x 30m y from " + "<" * 1000, "\u0664 \u00b2 \u2155",
]
ALPHABET = (
    "abc sshrdpfromreasonbecausehelplistrevokeextendcancel#@!^|<>&;:.,/\\'\"`()[]{}%\t\n"
    "0123456789smhd \u00a0\u202f\u2018\u2019\u201c\u201d\u200b\u00e9\u0664\u00b2\U0001F600"
)


def junk(count: int) -> list[str]:
    rng = random.Random(20240531)
    words = ["from", "revoke", "extend", "ssh", "30m", "1h", "#42", "reason:", "<http://1.2.3.4>"]
    texts = []
    for _ in range(count):
        if rng.random() < 0.5:
            texts.append("".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 60))))
        else:
            texts.append(" ".join(rng.choice(words + list(ALPHABET)) for _ in range(
                rng.randint(0, 12))))
    return texts


@pytest.mark.parametrize("batch", [NASTY, junk(2000)], ids=["nasty", "random"])
def test_parse_never_raises(batch: list[str]) -> None:
    for text in batch:
        result = parse(text)
        assert isinstance(result, Help | ListGrants | ListTargets | Revoke | Extend | Cancel
                          | Request | ParseError), text
        if isinstance(result, ParseError):
            assert result.message
            assert not isinstance(parse(result.example.removeprefix("/jit ")), ParseError)
        if isinstance(result, Request):
            assert result.service is None or result.service == result.service.lower()
            assert result.target is None or result.target == result.target.lower()
            assert result.reason == result.reason.strip()
