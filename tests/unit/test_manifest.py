"""manifest.yml matches the code: the command, events and Web API calls the bot really makes.

The calls are read from the bot's source (every `<...client>.<method>(...)` on a Slack
WebClient), so a new Web API call, event or command fails here until the manifest, and
the scope table below, say what it needs.
"""

from __future__ import annotations

import ast
import inspect
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from slack_sdk import WebClient

from bot.main import EVENTS_PATH

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "manifest.yml"
BOT_SOURCES = sorted([*(ROOT / "bot").glob("*.py"), *(ROOT / "bot" / "listeners").glob("*.py")])

EXPECTED_BOT_SCOPES = {"commands", "chat:write", "usergroups:read"}

# Web API method -> the bot scope it needs (None: no scope beyond being the app), from
# Slack's method reference. Posting with a user id as the channel (the DMs) lands in the
# app's Messages tab and needs chat:write only: no im:write, no conversations.open.
METHOD_SCOPES: dict[str, str | None] = {
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "chat.postEphemeral": "chat:write",
    "auth.test": None,  # the sender asks whether Slack is back after an outage
    "views.open": None,
    "views.update": None,
    "views.push": None,
    "views.publish": None,
    "usergroups.list": "usergroups:read",
    "usergroups.users.list": "usergroups:read",
}
# Events API event -> the bot scope its subscription needs.
EVENT_SCOPES: dict[str, str | None] = {"app_home_opened": None}
# Scopes that come with a feature rather than a Web API call.
FEATURE_SCOPES = {"commands"}  # slash commands


def manifest() -> dict[str, Any]:
    loaded = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


@cache
def api_method(python_name: str) -> str | None:
    """`chat_postMessage` -> `chat.postMessage`, read from slack_sdk's own source."""
    function = getattr(WebClient, python_name, None)
    if python_name.startswith("_") or not callable(function):
        return None
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return None
    found = re.search(r"""api_call\(\s*["']([\w.]+)["']""", source)
    return found.group(1) if found else None


def _is_client(node: ast.expr) -> bool:
    name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")
    return name.lower().endswith("client")


def _calls(path: Path) -> list[ast.Call]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def web_api_calls(sources: list[Path] = BOT_SOURCES) -> dict[str, set[str]]:
    """Web API method -> the files calling it, over bot/*.py and bot/listeners/*.py."""
    found: dict[str, set[str]] = {}
    for path in sources:
        for call in _calls(path):
            func = call.func
            if not isinstance(func, ast.Attribute) or not _is_client(func.value):
                continue
            if func.attr == "api_call" and call.args and isinstance(call.args[0], ast.Constant):
                method = str(call.args[0].value)
            else:
                method = api_method(func.attr) or ""
            if method:
                found.setdefault(method, set()).add(path.name)
    return found


def registered(kind: str) -> set[str]:
    """The string arguments of `@app.<kind>("...")` across the bot's listeners."""
    names = set()
    for path in BOT_SOURCES:
        for call in _calls(path):
            func = call.func
            if (isinstance(func, ast.Attribute) and func.attr == kind
                    and isinstance(func.value, ast.Name) and func.value.id == "app"
                    and call.args and isinstance(call.args[0], ast.Constant)):
                names.add(str(call.args[0].value))
    return names


def test_metadata_and_names() -> None:
    data = manifest()
    assert data["_metadata"] == {"major_version": 1, "minor_version": 1}
    assert data["display_information"]["name"] == "jit"
    assert len(data["display_information"]["description"]) <= 140
    assert data["features"]["bot_user"] == {"display_name": "jit", "always_online": False}


def test_slash_command_jit() -> None:
    commands = {c["command"]: c for c in manifest()["features"]["slash_commands"]}
    assert "/jit" in commands
    jit = commands["/jit"]
    assert jit["should_escape"] is False
    assert jit["description"] and jit["usage_hint"]
    assert jit["url"].endswith(EVENTS_PATH)


def test_commands_in_code_are_in_the_manifest() -> None:
    in_code = registered("command")
    assert "/jit" in in_code, "the scanner found no @app.command: has the code moved?"
    assert in_code <= {c["command"] for c in manifest()["features"]["slash_commands"]}


def test_socket_mode_on() -> None:
    assert manifest()["settings"]["socket_mode_enabled"] is True


def test_interactivity_on() -> None:
    interactivity = manifest()["settings"]["interactivity"]
    assert interactivity["is_enabled"] is True
    assert interactivity["request_url"].endswith(EVENTS_PATH)
    assert registered("action") or registered("view")  # what interactivity is for


def test_app_home_opened_subscribed() -> None:
    events = manifest()["settings"]["event_subscriptions"]
    assert "app_home_opened" in events["bot_events"]
    assert events["request_url"].endswith(EVENTS_PATH)


def test_events_in_code_are_subscribed_and_in_the_table() -> None:
    in_code = registered("event")
    assert "app_home_opened" in in_code, "the scanner found no @app.event: has the code moved?"
    unknown = in_code - EVENT_SCOPES.keys()
    assert not unknown, f"add {sorted(unknown)} to EVENT_SCOPES with the scope Slack lists"
    assert in_code <= set(manifest()["settings"]["event_subscriptions"]["bot_events"])


def test_home_tab_and_read_only_messages_tab() -> None:
    home = manifest()["features"]["app_home"]
    assert home == {"home_tab_enabled": True, "messages_tab_enabled": True,
                    "messages_tab_read_only_enabled": True}


def test_one_request_url_for_everything() -> None:
    data = manifest()
    urls = {c["url"] for c in data["features"]["slash_commands"]}
    urls |= {data["settings"]["interactivity"]["request_url"],
             data["settings"]["event_subscriptions"]["request_url"]}
    assert urls == {f"https://jit.example.com{EVENTS_PATH}"}


def test_bot_scopes_exactly() -> None:
    scopes = manifest()["oauth_config"]["scopes"]
    assert set(scopes) == {"bot"}, "no user scopes"
    assert len(scopes["bot"]) == len(set(scopes["bot"]))
    assert set(scopes["bot"]) == EXPECTED_BOT_SCOPES


def test_api_method_names_come_from_slack_sdk() -> None:
    assert api_method("chat_postMessage") == "chat.postMessage"
    assert api_method("usergroups_users_list") == "usergroups.users.list"
    assert api_method("retry_handlers") is None


def test_the_scanner_finds_the_calls() -> None:
    calls = web_api_calls()
    assert "chat.postMessage" in calls, f"found only {sorted(calls)}: has the code moved?"


def test_the_scanner_sees_new_calls(tmp_path: Path) -> None:
    source = tmp_path / "new.py"
    source.write_text(
        "def f(client, app, self, users):\n"
        "    self._client.conversations_open(users=users)\n"
        "    app.client.api_call('reactions.add', json={})\n"
        "    client.retry_handlers.append(None)\n"
        "    service.open(1)\n", encoding="utf-8")
    assert web_api_calls([source]) == {"conversations.open": {"new.py"},
                                       "reactions.add": {"new.py"}}


def test_every_web_api_call_is_in_the_table() -> None:
    unknown = {m: sorted(f) for m, f in web_api_calls().items() if m not in METHOD_SCOPES}
    assert not unknown, ("the bot calls Web API methods missing from METHOD_SCOPES; add each "
                         f"with the scope Slack's reference lists (and to manifest.yml): {unknown}")


@pytest.mark.parametrize("method", sorted(web_api_calls()))
def test_every_web_api_call_is_covered_by_a_scope(method: str) -> None:
    needed = METHOD_SCOPES.get(method)
    assert needed is None or needed in manifest()["oauth_config"]["scopes"]["bot"], (
        f"{method} needs {needed}")


def test_no_scope_without_a_use() -> None:
    """Least privilege: every bot scope is needed by a call, an event or a feature."""
    used = {METHOD_SCOPES.get(m) for m in web_api_calls()}
    used |= {EVENT_SCOPES.get(e) for e in registered("event")}
    used |= FEATURE_SCOPES
    assert set(manifest()["oauth_config"]["scopes"]["bot"]) == used - {None}


def test_settings_fields() -> None:
    settings = manifest()["settings"]
    assert settings["org_deploy_enabled"] is False
    assert settings["token_rotation_enabled"] is False
