"""jitcore.logs: one JSON (or text) line per record, and no secret ever reaches the stream."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from jitcore import logs

BOT_TOKEN = "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOp"
APP_TOKEN = "xapp-1-A0JITAPP-1234567890-abcdef0123456789"
SIGNING_SECRET = "8f0c2b1e9d7a6c5b4e3f2a1b0c9d8e7f"
DB_PASSWORD = "s3cret-db-pw"
DB_URL = f"postgresql+psycopg://jit:{DB_PASSWORD}@db.internal:5432/jit"
SECRETS = [SIGNING_SECRET, logs.url_password(DB_URL)]  # the tokens are caught by their shape
EVERY_SECRET = (BOT_TOKEN, APP_TOKEN, SIGNING_SECRET, DB_PASSWORD)


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def root_logger(monkeypatch: pytest.MonkeyPatch,
                caplog: pytest.LogCaptureFixture) -> Iterator[logging.Logger]:
    """configure() rewires the root logger and quietens chatty libraries' loggers: put the
    handlers and every logger's level back afterwards.

    pytest adds and removes handlers of its own around each phase of a test (of caplog's
    class): those are left to it; every other handler is restored as it was."""
    monkeypatch.delenv(logs.FORMAT_ENV, raising=False)
    root = logging.getLogger()
    per_phase = type(caplog.handler)
    kept = [h for h in root.handlers if not isinstance(h, per_phase)]
    levels = {name: logger.level for name, logger in loggers().items()}
    yield root
    for handler in list(root.handlers):
        if not isinstance(handler, per_phase) and handler not in kept:
            root.removeHandler(handler)
    for handler in kept:
        if handler not in root.handlers:
            root.addHandler(handler)
    for name, logger in loggers().items():
        logger.setLevel(levels.get(name, logging.NOTSET))


def loggers() -> dict[str, logging.Logger]:
    """Every logger there is, the root's name being ""."""
    found = {name: logger for name, logger in logging.root.manager.loggerDict.items()
             if isinstance(logger, logging.Logger)}
    return {"": logging.getLogger(), **found}


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines(stream)]


def log_everything(log: logging.Logger) -> None:
    """Each secret in a message, an argument, an extra field and an exception's traceback."""
    log.info("connecting with %s and %s", BOT_TOKEN, APP_TOKEN)
    log.warning(f"signing secret is {SIGNING_SECRET}", extra={"url": DB_URL,
                                                               "token": BOT_TOKEN})
    try:
        raise RuntimeError(f"login failed for {DB_URL} (app token {APP_TOKEN}, "
                           f"secret {SIGNING_SECRET}, bot {BOT_TOKEN})")
    except RuntimeError:
        log.exception("database unreachable")


def test_json_line_fields() -> None:
    stream = io.StringIO()
    assert logs.configure(fmt="json", stream=stream) == "json"
    logging.getLogger("jit.test").info("#%d %s", 7, "opened",
                                       extra={"grant_id": 7, "event": "opened",
                                              "status": "active", "actor": "U0BOB",
                                              "target": "prod-db", "ratio": 0.5,
                                              "done": True, "when": object})
    logging.getLogger("jit.test").debug("below the level")
    (line,) = json_lines(stream)
    assert line["level"] == "info" and line["logger"] == "jit.test"
    assert line["message"] == "#7 opened"
    assert line["ts"].endswith("Z") and line["ts"][:2] == "20" and "T" in line["ts"]
    assert {k: line[k] for k in ("grant_id", "event", "status", "actor", "target", "ratio",
                                 "done")} == {
        "grant_id": 7, "event": "opened", "status": "active", "actor": "U0BOB",
        "target": "prod-db", "ratio": 0.5, "done": True}
    assert line["when"] == str(object)  # not JSON-native: as text
    assert "exc" not in line
    # Nothing of LogRecord's own bookkeeping leaks in.
    assert not {"args", "msg", "levelno", "pathname", "lineno", "exc_info"} & set(line)


def test_json_exception_in_exc() -> None:
    stream = io.StringIO()
    logs.configure(fmt="json", stream=stream)
    try:
        raise ValueError("the cloud said no")
    except ValueError:
        logging.getLogger("jit.test").exception("close failed")
    (line,) = json_lines(stream)
    assert line["level"] == "error" and line["message"] == "close failed"
    assert line["exc"].startswith("Traceback (most recent call last):")
    assert line["exc"].rstrip().endswith("ValueError: the cloud said no")
    assert "test_json_exception_in_exc" in line["exc"]


def test_text_format_when_asked() -> None:
    stream = io.StringIO()  # not a terminal, yet text was asked for
    assert logs.configure(fmt="text", stream=stream) == "text"
    logging.getLogger("jit.test").warning("plain %s", "words", extra={"grant_id": 3})
    (line,) = lines(stream)
    assert line.endswith(" WARNING jit.test: plain words")
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_format_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(logs.FORMAT_ENV, " TEXT ")
    assert logs.configure(stream=io.StringIO()) == "text"
    monkeypatch.setenv(logs.FORMAT_ENV, "json")
    assert logs.configure(stream=Terminal()) == "json"
    monkeypatch.setenv(logs.FORMAT_ENV, "yaml")  # not a format: the default applies
    assert logs.configure(stream=Terminal()) == "text"
    assert logs.configure(fmt="json", stream=Terminal()) == "json"  # the argument wins


def test_default_json_unless_a_terminal() -> None:
    piped = io.StringIO()
    assert logs.configure(stream=piped) == "json"
    logging.getLogger("jit.test").info("to a pipe")
    assert json_lines(piped)[0]["message"] == "to a pipe"

    terminal = Terminal()
    assert logs.configure(stream=terminal) == "text"
    logging.getLogger("jit.test").info("to a person")
    assert lines(terminal)[0].endswith("INFO jit.test: to a person")
    assert piped.getvalue().count("\n") == 1, "the old handler was not replaced"


def test_configure_replaces_handlers_and_sets_level(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    logs.configure(level=logging.WARNING, stream=stream)
    assert len(root_logger.handlers) == 1 and root_logger.level == logging.WARNING
    logging.getLogger("jit.test").info("dropped")
    logging.getLogger("botocore.endpoint").warning("kept")
    logging.getLogger("botocore.endpoint").info("chatty")
    assert [line["message"] for line in json_lines(stream)] == ["kept"]


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_secrets_redacted(fmt: str) -> None:
    stream = io.StringIO()
    logs.configure(fmt=fmt, secrets=SECRETS, stream=stream)
    log_everything(logging.getLogger("jit.test"))
    output = stream.getvalue()
    for secret in EVERY_SECRET:
        assert secret not in output
    # Message 2, message 1 (+ 2 extra fields in JSON), exception 4.
    assert output.count(logs.REDACTED) == (9 if fmt == "json" else 7)
    assert "db.internal:5432/jit" in output  # the rest of the URL is kept
    if fmt == "json":
        first, second, third = json_lines(stream)
        assert first["message"] == f"connecting with {logs.REDACTED} and {logs.REDACTED}"
        assert second["message"] == f"signing secret is {logs.REDACTED}"
        assert second["url"] == f"postgresql+psycopg://jit:{logs.REDACTED}@db.internal:5432/jit"
        assert second["token"] == logs.REDACTED
        assert third["exc"].rstrip().endswith(
            f"RuntimeError: login failed for postgresql+psycopg://jit:{logs.REDACTED}"
            f"@db.internal:5432/jit (app token {logs.REDACTED}, secret {logs.REDACTED}, "
            f"bot {logs.REDACTED})")
    else:
        assert f"jit.test: connecting with {logs.REDACTED} and {logs.REDACTED}" in output
        assert "Traceback (most recent call last):" in output
        assert f"(app token {logs.REDACTED}, secret {logs.REDACTED}, bot {logs.REDACTED})" \
            in output


def test_longer_secret_replaced_whole() -> None:
    stream = io.StringIO()
    logs.configure(fmt="text", secrets=["abcdef", "abcdefghij", "short"], stream=stream)
    logging.getLogger("jit.test").info("abcdefghij abcdef short")
    # The longer secret goes as one; one under 6 characters is not treated as a secret.
    assert lines(stream)[0].endswith(f"jit.test: {logs.REDACTED} {logs.REDACTED} short")


def test_json_redacts_secret_with_json_escapes() -> None:
    secret = 'pa"ss\\word'
    stream = io.StringIO()
    logs.configure(fmt="json", secrets=[secret], stream=stream)
    logging.getLogger("jit.test").info("password %s", secret)
    assert json_lines(stream)[0]["message"] == f"password {logs.REDACTED}"


def test_json_redacts_token_after_newline() -> None:
    stream = io.StringIO()
    logs.configure(fmt="json", stream=stream)
    try:
        raise RuntimeError(f"slack refused the token:\n{BOT_TOKEN}")
    except RuntimeError:
        logging.getLogger("jit.test").exception("auth.test failed")
    assert BOT_TOKEN not in json_lines(stream)[0]["exc"]


@pytest.mark.parametrize(("url", "password"), [
    ("postgresql+psycopg://jit:s3cret@db:5432/jit", "s3cret"),
    ("postgresql://jit:p%40ss%2Fw0rd@db/jit", "p@ss/w0rd"),  # percent-decoded
    ("postgresql+psycopg://jit@db/jit", ""),
    ("postgresql+psycopg://jit:s3cret@db:notaport/jit", "s3cret"),  # unreadable: by shape
    ("sqlite:///./jit.db", ""),
    ("sqlite://", ""),
    ("", ""),
    ("not a url at all", ""),
    ("://:@", ""),
])
def test_url_password(url: str, password: str) -> None:
    assert logs.url_password(url) == password
