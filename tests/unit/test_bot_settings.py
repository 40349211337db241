"""BotSettings.from_env: what a good environment gives, and a clear SettingsError for each
missing or malformed setting, naming the variable; `python -m bot.main` turns one into a
single line and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from bot.main import BotSettings
from jitcore.errors import JitError, SettingsError

ROOT = Path(__file__).resolve().parents[2]
BOT_TOKEN, APP_TOKEN = "xoxb-1-2-abc", "xapp-1-A1-2-def"
VALID = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": "s3cret"}


@pytest.fixture
def from_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, str]], BotSettings]:
    """BotSettings.from_env with exactly these SLACK_ and JIT_ variables in the environment."""
    def read(env: dict[str, str]) -> BotSettings:
        for name in list(os.environ):
            if name.startswith(("SLACK_", "JIT_")):
                monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return BotSettings.from_env()
    return read


@pytest.fixture
def settings(from_env: Callable[[dict[str, str]], BotSettings]) -> Callable[..., BotSettings]:
    """The settings of VALID and these variables."""
    return lambda **env: from_env({**VALID, **env})


@pytest.fixture
def refused(from_env: Callable[[dict[str, str]], BotSettings]) -> Callable[..., str]:
    """The SettingsError's message for VALID and these variables: one line."""
    def message(**env: str) -> str:
        with pytest.raises(SettingsError) as caught:
            from_env({**VALID, **env})
        text = str(caught.value)
        assert "\n" not in text
        return text
    return message


def test_minimal_env_gives_http_on_3000(settings: Callable[..., BotSettings]) -> None:
    got = settings()
    assert (got.bot_token, got.signing_secret, got.app_token, got.http_port, got.api_url,
            got.expiry_warning, got.outbox_retention) == (
        BOT_TOKEN, "s3cret", None, 3000, None, timedelta(minutes=5), timedelta(days=7))


def test_settings_errors_are_jit_errors() -> None:
    assert issubclass(SettingsError, JitError)


def test_secrets_are_not_in_the_repr(settings: Callable[..., BotSettings]) -> None:
    shown = repr(settings(SLACK_APP_TOKEN=APP_TOKEN))
    assert "3000" in shown
    assert BOT_TOKEN not in shown and "s3cret" not in shown and APP_TOKEN not in shown


def test_a_dotenv_file_is_not_read(from_env: Callable[[dict[str, str]], BotSettings],
                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text(f"SLACK_BOT_TOKEN={BOT_TOKEN}\nSLACK_SIGNING_SECRET=x\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingsError, match="SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET"):
        from_env({})


def test_full_env(settings: Callable[..., BotSettings]) -> None:
    got = settings(SLACK_APP_TOKEN=APP_TOKEN, JIT_HTTP_PORT="8080",
                   SLACK_API_URL="https://slack-gov.com/api/")
    assert (got.app_token, got.http_port, got.api_url) == (
        APP_TOKEN, 8080, "https://slack-gov.com/api/")


def test_values_are_stripped(from_env: Callable[[dict[str, str]], BotSettings]) -> None:
    got = from_env({"SLACK_BOT_TOKEN": f" {BOT_TOKEN}\n",
                                "SLACK_SIGNING_SECRET": "\ts3cret ",
                                "SLACK_APP_TOKEN": f" {APP_TOKEN} ", "JIT_HTTP_PORT": " 8080 "})
    assert (got.bot_token, got.signing_secret, got.app_token, got.http_port) == (
        BOT_TOKEN, "s3cret", APP_TOKEN, 8080)


@pytest.mark.parametrize("blank", ["", "   "])
def test_blank_app_token_means_http(blank: str, settings: Callable[..., BotSettings]) -> None:
    assert settings(SLACK_APP_TOKEN=blank).app_token is None


@pytest.mark.parametrize("blank", ["", "  "])
def test_blank_port_means_default(blank: str, settings: Callable[..., BotSettings]) -> None:
    assert settings(JIT_HTTP_PORT=blank).http_port == 3000


@pytest.mark.parametrize("port", ["1", "443", "65535"])
def test_port_bounds_accepted(port: str, settings: Callable[..., BotSettings]) -> None:
    assert settings(JIT_HTTP_PORT=port).http_port == int(port)


@pytest.mark.parametrize(("given", "normalised"), [
    ("https://slack.com/api", "https://slack.com/api/"),
    ("https://slack.com/api/", "https://slack.com/api/"),
    ("http://127.0.0.1:8765", "http://127.0.0.1:8765/"),
    (" http://localhost:9000/api ", "http://localhost:9000/api/"),
])
def test_api_url_ends_with_a_slash(given: str, normalised: str,
                                   settings: Callable[..., BotSettings]) -> None:
    assert settings(SLACK_API_URL=given).api_url == normalised


def test_blank_api_url_means_slacks(settings: Callable[..., BotSettings]) -> None:
    assert settings(SLACK_API_URL=" ").api_url is None


@pytest.mark.parametrize("token", ["xoxp-1-2-user", "xapp-1-A1-2", "abc"])
def test_bot_token_must_be_xoxb(token: str, refused: Callable[..., str]) -> None:
    message = refused(SLACK_BOT_TOKEN=token)
    assert "SLACK_BOT_TOKEN must be a bot token (it starts with xoxb-)" in message
    assert token not in message  # a secret is never echoed


@pytest.mark.parametrize("token", ["xoxb-1-2-bot", "abc"])
def test_app_token_must_be_xapp(token: str, refused: Callable[..., str]) -> None:
    message = refused(SLACK_APP_TOKEN=token)
    assert "SLACK_APP_TOKEN must be an app-level token (it starts with xapp-)" in message
    assert "unset it to serve HTTP" in message
    assert token not in message


@pytest.mark.parametrize("port", ["abc", "0", "70000", "65536", "-1", "80.5", "0x50"])
def test_bad_port(port: str, refused: Callable[..., str]) -> None:
    assert refused(JIT_HTTP_PORT=port) == (
        f"JIT_HTTP_PORT={port!r} is not a port number (1-65535)")


@pytest.mark.parametrize("port", ["²", "٣"])
def test_non_ascii_digits_are_not_a_port(port: str, refused: Callable[..., str]) -> None:
    assert "JIT_HTTP_PORT" in refused(JIT_HTTP_PORT=port)


@pytest.mark.parametrize("url", ["ftp://x", "not a url", "https://", "slack.com/api"])
def test_bad_api_url(url: str, refused: Callable[..., str]) -> None:
    assert refused(SLACK_API_URL=url) == (
        f"SLACK_API_URL={url!r} is not an http(s) URL, e.g. https://slack.com/api/")


@pytest.mark.parametrize(("env", "names"), [
    ({}, "SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET are not set"),
    ({"SLACK_BOT_TOKEN": BOT_TOKEN}, "SLACK_SIGNING_SECRET is not set"),
    ({"SLACK_SIGNING_SECRET": "s3cret"}, "SLACK_BOT_TOKEN is not set"),
    ({"SLACK_BOT_TOKEN": " ", "SLACK_SIGNING_SECRET": ""},
     "SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET are not set"),
])
def test_missing_variables_are_named(env: dict[str, str], names: str,
                                     from_env: Callable[[dict[str, str]], BotSettings]) -> None:
    with pytest.raises(SettingsError) as caught:
        from_env(env)
    message = str(caught.value)
    assert message.startswith(f"{names}. ")
    assert "manifest.yml" in message


def test_missing_is_reported_before_malformed(
        from_env: Callable[[dict[str, str]], BotSettings]) -> None:
    with pytest.raises(SettingsError) as caught:
        from_env({"SLACK_BOT_TOKEN": "not-a-bot-token", "JIT_HTTP_PORT": "abc"})
    assert str(caught.value).startswith("SLACK_SIGNING_SECRET is not set. ")


def test_process_with_a_bad_port_exits_2_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "JIT_"))}
    env.update(VALID, SLACK_APP_TOKEN="", JIT_HTTP_PORT="abc")
    result = subprocess.run([sys.executable, "-m", "bot.main"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == "jit-bot cannot start: JIT_HTTP_PORT='abc' is not a port number (1-65535)"


def test_expiry_warning_setting(settings: Callable[..., BotSettings],
                                refused: Callable[..., str]) -> None:
    assert settings().expiry_warning == timedelta(minutes=5)
    assert settings(JIT_EXPIRY_WARNING="10m").expiry_warning == timedelta(minutes=10)
    assert settings(JIT_EXPIRY_WARNING="0").expiry_warning is None
    assert refused(JIT_EXPIRY_WARNING="soon") == (
        "JIT_EXPIRY_WARNING: 'soon' is not a duration; use e.g. 90s, 30m, 2h, 1h30m or 1d")


def test_outbox_retention_setting(settings: Callable[..., BotSettings],
                                  refused: Callable[..., str]) -> None:
    assert settings(JIT_OUTBOX_RETENTION="2d").outbox_retention == timedelta(days=2)
    assert settings(JIT_OUTBOX_RETENTION=" ").outbox_retention == timedelta(days=7)
    assert refused(JIT_OUTBOX_RETENTION="week") == (
        "JIT_OUTBOX_RETENTION (how long delivered Slack posts are kept): 'week' is not a "
        "duration; use e.g. 90s, 30m, 2h, 1h30m or 1d")
