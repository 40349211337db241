"""`/jit` text -> a typed command. Pure: stdlib and jitcore.domain only, no I/O.

    /jit <service|port> <target> <duration> [from <address>] [reason ...]
    /jit help | list | targets | revoke <id> | extend <id> <duration> | cancel <id>

A request with parts left out is still a `Request`; `missing` names the parts so the
bot can open a modal prefilled with the rest. Words that cannot be what their place
demands give a `ParseError` whose message quotes them and whose example shows the form.
`from <address>` may stand anywhere before the reason, or end it if it names an IP.
Sources are kept as typed (cleaned); `jitcore.policy` decides whether they are allowed.
Messages quote user text, so whoever renders them must escape it.

`request_id` reads a request number wherever one comes in: a command word, a button's
value, a modal's private_metadata.
"""

from __future__ import annotations

import ipaddress
import json
import re
from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from jitcore.domain import WELL_KNOWN_SERVICES, parse_duration


@dataclass(frozen=True, slots=True)
class Help:
    pass


@dataclass(frozen=True, slots=True)
class ListGrants:
    pass


@dataclass(frozen=True, slots=True)
class ListTargets:
    pass


@dataclass(frozen=True, slots=True)
class Revoke:
    grant_id: int


@dataclass(frozen=True, slots=True)
class Extend:
    grant_id: int
    duration: timedelta


@dataclass(frozen=True, slots=True)
class Cancel:
    grant_id: int


@dataclass(frozen=True, slots=True)
class Request:
    """Ask for access; `missing` names, in order, the parts among the first four that are None."""

    service: str | None
    target: str | None
    duration: timedelta | None
    source: str | None
    reason: str
    missing: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NotARequestNumber:
    """A value where a request number belongs that is not one; the message quotes it."""

    message: str


@dataclass(frozen=True, slots=True)
class ParseError:
    """What was wrong with the text, and a correct command of the form the user meant."""

    message: str
    example: str


Command = Help | ListGrants | ListTargets | Revoke | Extend | Cancel | Request

_BARE: dict[str, Command] = {"help": Help(), "list": ListGrants(), "targets": ListTargets()}
REQUEST_EXAMPLE = "/jit ssh prod-db 30m from 203.0.113.7 fix replication"
EXAMPLES: tuple[tuple[str, str], ...] = (
    (REQUEST_EXAMPLE, "ask for ssh to prod-db for 30 minutes from your address"),
    ("/jit list", "your requests and open grants"),
    ("/jit targets", "the targets and ports you may ask for"),
    ("/jit revoke 42", "close grant 42 now"),
    ("/jit extend 42 30m", "keep grant 42 open until 30 minutes from now"),
    ("/jit cancel 42", "withdraw pending request 42"),
    ("/jit help", "this message"),
)
# No `<`, `>` or `&` here: Slack would read them as markup.
HELP_TEXT = "\n".join((
    "*Usage:* `/jit SERVICE TARGET DURATION from ADDRESS reason`",
    f"SERVICE is {', '.join(WELL_KNOWN_SERVICES)} or a port number; DURATION is like "
    "90s, 30m, 2h, 1h30m or 1d. Leave parts out and jit asks for them in a form.",
    *(f"`{example}` {what}" for example, what in EXAMPLES),
))

MAX_REQUEST_ID = 2**31 - 1  # the grants table's id is a 32-bit integer on PostgreSQL
_ID_DIGITS = len(str(MAX_REQUEST_ID))
_SHOWN_CHARS = 40
_MAX_DURATION_CHARS = 32  # parse_duration is quadratic in long digit runs
_DURATION_WORDS = 4  # `1h 30m` and `30 m` are one duration
_SLACK_MARKUP = re.compile(r"<([^<>|]*)(?:\|([^<>]*))?>")
_TYPOGRAPHY = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
    "\u200b": None, "\u200c": None, "\u200d": None, "\u2060": None, "\ufeff": None,
})


def _quote(word: str) -> str:
    return repr(word if len(word) <= 40 else word[:40] + "…")


def _unwrap(match: re.Match[str]) -> str:
    """Slack's `<url|label>`, `<@U1|name>`, `<#C1|name>`, `<!here>` -> what the user typed."""
    inner, label = match.group(1), match.group(2)
    if inner[:1] in ("@", "#"):
        name = label or inner[1:]
        return name if name.startswith(inner[0]) else inner[0] + name
    if inner.startswith("!"):
        return label or "@" + inner[1:].split("^")[0]
    return label or inner


def _normalise(text: str) -> list[str]:
    text = _SLACK_MARKUP.sub(_unwrap, text.translate(_TYPOGRAPHY))
    # Slack escapes these three in command text; undo after the real markup is gone.
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return text.split()  # splits on every Unicode space, non-breaking ones included


def _clean_address(word: str) -> str:
    """`"203.0.113.7."` or `http://203.0.113.7/` -> `203.0.113.7`; not validated."""
    cleaned = word.strip("\"'`()").rstrip(".,;").strip("\"'`()")
    if cleaned.lower().startswith("mailto:"):
        cleaned = cleaned[len("mailto:"):]
    if "://" in cleaned:
        with suppress(ValueError):  # an unclosed `[` in an IPv6 URL, say
            cleaned = urlsplit(cleaned).hostname or cleaned
    return cleaned


def _looks_like_address(word: str) -> bool:
    try:
        ipaddress.ip_network(_clean_address(word), strict=False)
    except ValueError:
        return False
    return True


def _reason_lead(word: str) -> str | None:
    """The `reason:`/`because` a reason may start with (`reason:fix` too), if any."""
    lowered = word.lower()
    for lead in ("reason:", "because:"):
        if lowered.startswith(lead):
            return lead
    return lowered if lowered in ("reason", "because") else None


def _shown(value: object) -> str:
    """A value someone sent, in a code span: cut short, controls and backticks replaced."""
    if not isinstance(value, str):
        value = json.dumps(value, default=repr)  # `null`, as it came in the JSON
    if not value:
        return "an empty value"
    cut = value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "…"
    plain = "".join("\ufffd" if not char.isprintable() and char != " " else char
                    for char in cut)
    return "`" + plain.replace("`", "'") + "`"


def request_id(value: object) -> int | NotARequestNumber:
    """A request number as a command word, a button value or a modal's private_metadata
    carries it: ASCII digits, after an optional `#`, from 1 to MAX_REQUEST_ID. Never raises."""
    if isinstance(value, str):
        digits = value.removeprefix("#")
        # Length first: int() refuses strings past 4300 digits; isascii: int() reads "٣" too.
        if (0 < len(digits) <= _ID_DIGITS and digits.isascii() and digits.isdigit()
                and 0 < int(digits) <= MAX_REQUEST_ID):
            return int(digits)
    return NotARequestNumber(f"{_shown(value)} is not a request number")


def _grant_id(command: str, words: list[str], example: str) -> int | ParseError:
    if not words:
        return ParseError(f"`{command}` needs a grant id, the number `/jit list` shows", example)
    found = request_id(words[0])
    if isinstance(found, NotARequestNumber):  # the words `/jit help` and `/jit list` use
        return ParseError(f"{_quote(words[0])} is not a grant id; give a number such as 42 "
                          "or #42 from `/jit list`", example)
    return found


def _duration(words: list[str]) -> tuple[timedelta, int] | str:
    """The longest run of leading words that reads as one duration, and its length; else why not."""
    for count in range(min(len(words), _DURATION_WORDS), 0, -1):
        joined = "".join(words[:count])
        if len(joined) <= _MAX_DURATION_CHARS:
            try:
                return parse_duration(joined), count
            except ValueError as exc:
                if count == 1:
                    return str(exc)
    return f"{_quote(words[0])} is not a duration; use e.g. 90s, 30m, 2h, 1h30m or 1d"


def _by_id(command: str, rest: list[str]) -> Command | ParseError:
    """`revoke 42`, `cancel #42`, `extend 42 30m`."""
    example = "/jit extend 42 30m" if command == "extend" else f"/jit {command} 42"
    grant_id = _grant_id(command, rest, example)
    if isinstance(grant_id, ParseError):
        return grant_id
    used, duration = 1, None
    if command == "extend":
        if len(rest) < 2:
            return ParseError("`extend` needs a duration after the grant id, e.g. 30m", example)
        found = _duration(rest[1:])
        if isinstance(found, str):
            return ParseError(found, example)
        duration, used = found[0], 1 + found[1]
    if len(rest) > used:
        takes = "a grant id and a duration" if duration else "only a grant id"
        return ParseError(f"`{command}` takes {takes}; remove {_quote(' '.join(rest[used:]))}",
                          example)
    if duration is not None:
        return Extend(grant_id, duration)
    return Revoke(grant_id) if command == "revoke" else Cancel(grant_id)


class _Draft:
    """The parts of a request read so far, filled in as `_request` reads the words."""

    def __init__(self) -> None:
        self.slots: list[str | None] = [None, None]  # service, target
        self.duration: timedelta | None = None
        self.source: str | None = None

    def reason_starts(self, word: str) -> bool:
        """Whether the reason starts at `word`: it says so, or every part has been given
        (`from` may still follow; the reason cannot start with it)."""
        if word.lower() == "from":
            return False
        return _reason_lead(word) is not None or (
            None not in self.slots and self.duration is not None)

    def read(self, words: list[str], i: int) -> int | ParseError:
        """Read the part starting at words[i]; the index after it, or what is wrong."""
        lowered = words[i].lower()
        if lowered == "from":
            return self._read_source(words, i)
        if None in self.slots:
            self.slots[self.slots.index(None)] = lowered
            return i + 1
        return self._read_duration(words, i)

    def _read_source(self, words: list[str], i: int) -> int | ParseError:
        address = _clean_address(words[i + 1]) if i + 1 < len(words) else ""
        if not address or _reason_lead(address) is not None:
            return ParseError("`from` needs an address, e.g. `from 203.0.113.7`",
                              REQUEST_EXAMPLE)
        if self.source is not None:
            return ParseError(f"give one `from` address, not {_quote(self.source)} and "
                              f"{_quote(address)}", REQUEST_EXAMPLE)
        self.source = address
        return i + 2

    def _read_duration(self, words: list[str], i: int) -> int | ParseError:
        if words[i].lower() == "for" and i + 1 < len(words) and not isinstance(
                _duration(words[i + 1:]), str):
            i += 1  # `for 2h` reads naturally; the `for` adds nothing
        found = _duration(words[i:])
        if isinstance(found, str):
            return ParseError(found, REQUEST_EXAMPLE)
        self.duration = found[0]
        return i + found[1]

    def finish(self, rest: list[str]) -> Request:
        """The request, with `rest` (the words after the parts) as its reason."""
        reason = _reason(rest)
        if reason is None:
            reason = " ".join(rest)
            if self.source is None and _ends_with_address(rest):
                # `... fix it from 203.0.113.7`
                self.source, reason = _clean_address(rest[-1]), " ".join(rest[:-2])
        service, target = self.slots
        values = {"service": service, "target": target, "duration": self.duration,
                  "source": self.source}
        missing = tuple(name for name, value in values.items() if value is None)
        return Request(service, target, self.duration, self.source, reason, missing)


def _reason(rest: list[str]) -> str | None:
    """The reason `rest` gives after a `reason:`/`because` lead; None if it has none."""
    lead = _reason_lead(rest[0]) if rest else None
    if lead is None:
        return None
    first = rest[0][len(lead):]
    return " ".join([first, *rest[1:]] if first else rest[1:])


def _ends_with_address(words: list[str]) -> bool:
    return len(words) >= 2 and words[-2].lower() == "from" and _looks_like_address(words[-1])


def _request(words: list[str]) -> Request | ParseError:
    draft = _Draft()
    i = 0
    while i < len(words) and not draft.reason_starts(words[i]):
        step = draft.read(words, i)
        if isinstance(step, ParseError):
            return step
        i = step
    return draft.finish(words[i:])


def parse(text: str) -> Command | ParseError:
    """The text after `/jit` -> a command, or a ParseError saying what is wrong. Never raises."""
    words = _normalise(text)
    if not words:
        return Help()
    keyword, rest = words[0].lower(), words[1:]
    if keyword in _BARE:
        if rest:
            return ParseError(f"`{keyword}` takes nothing more; remove "
                              f"{_quote(' '.join(rest))}", f"/jit {keyword}")
        return _BARE[keyword]
    if keyword in ("revoke", "cancel", "extend"):
        return _by_id(keyword, rest)
    return _request(words)
