"""Logging for jit's long-running processes (`jit-bot`, `jit run`).

One line per record on stdout: JSON when nobody is watching (a container, a pipe into a
log shipper), text on a terminal; `JIT_LOG_FORMAT=json|text` decides instead. A JSON line
holds `ts` (UTC), `level`, `logger`, `message`, the fields the caller attached with
`extra=` (the service's transitions carry `grant_id`, `event`, `status`, `actor`,
`target`), and `exc` for a traceback.

Secrets never reach the stream: the values registered with `configure(secrets=...)` (the
Slack tokens, the signing secret, a database password) and anything shaped like a Slack
token are replaced by `[redacted]` in the finished line, whatever put them in the message.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import IO, Any

from jitcore.store.db import url_password as url_password  # for the callers' secrets

FORMAT_ENV = "JIT_LOG_FORMAT"
REDACTED = "[redacted]"
_TOKEN = re.compile(r"\bx(?:ox[abposre]|app)-[A-Za-z0-9-]+")
# The attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}


class _Redacting(logging.Formatter):
    def __init__(self, secrets: Iterable[str], fmt: str | None = None) -> None:
        super().__init__(fmt)
        # Longest first, so that a secret containing another is replaced whole.
        self._secrets = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def redact(self, line: str) -> str:
        for secret in self._secrets:
            line = line.replace(secret, REDACTED)
        return _TOKEN.sub(REDACTED, line)

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class JsonFormatter(_Redacting):
    def format(self, record: logging.LogRecord) -> str:
        # Each string is redacted before encoding: in the encoded line a secret may appear
        # escaped (a quote, a backslash) and a token may follow "\n" (no word boundary).
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
                  .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = (value if value is None or isinstance(value, (int, float, bool))
                             else self.redact(str(value)))
        if record.exc_info:
            line["exc"] = self.redact(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False)  # every string in it is redacted


def check_format(env: Mapping[str, str]) -> None:
    """SettingsError unless JIT_LOG_FORMAT is unset, json or text."""
    from jitcore.errors import SettingsError

    chosen = env.get(FORMAT_ENV, "").strip().lower()
    if chosen not in ("", "json", "text"):
        raise SettingsError(f"{FORMAT_ENV}={env[FORMAT_ENV]!r}: use json or text (unset: "
                            "json unless stdout is a terminal)")


def configure(*, level: int = logging.INFO, secrets: Iterable[str] = (),
              fmt: str | None = None, stream: IO[str] | None = None) -> str:
    """Send every log record to `stream` (stdout) as JSON or text; returns the format."""
    stream = stream or sys.stdout
    chosen = (fmt or os.environ.get(FORMAT_ENV, "")).strip().lower()
    if chosen not in ("json", "text"):
        chosen = "text" if stream.isatty() else "json"
    handler = logging.StreamHandler(stream)
    secrets = list(secrets)
    handler.setFormatter(JsonFormatter(secrets) if chosen == "json" else _Redacting(
        secrets, "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Chatty libraries: their warnings matter, their progress does not.
    for noisy in ("alembic", "apscheduler", "botocore", "urllib3", "azure", "slack_bolt",
                  "slack_sdk"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return chosen
