"""The Slack Web API methods the stand-in answers, and the workspace they read and change.

`WebApi` holds what a Slack workspace would: messages per channel, ephemerals, DM channels,
views (modals, App Home tabs), user groups and users. Each method takes the call's arguments
and returns the answer's fields (the server adds `"ok": true`), or raises `SlackError` with
the error Slack would answer. Answers are shaped after Slack's own (see
tests/fakes/reference/slack/). Not thread-safe: the server calls it with its lock held.
"""

from __future__ import annotations

import copy
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Args = dict[str, Any]
MAX_BLOCKS = 50  # per message; a view may hold 100
MAX_VIEW_BLOCKS = 100
MAX_TEXT = 40_000
MAX_SECTION_TEXT = 3_000  # a section's text object (Block Kit reference)
# Undocumented: Slack answers msg_blocks_too_long once a message's blocks hold about this
# many characters of text in all (reported in slackapi/bolt-js#2509).
MAX_BLOCKS_TEXT = 13_200
TS_EPOCH = 1_700_000_000


class SlackError(Exception):
    """An `{"ok": false, "error": ...}` answer, raised inside a method handler."""

    def __init__(self, error: str, *messages: str) -> None:
        super().__init__(error)
        self.error = error
        self.messages = messages


@dataclass(frozen=True, slots=True)
class ResponseTarget:
    """Where a response_url's posts land: `user` sees its ephemerals in `channel`; with
    `message_ts`, replace_original and delete_original act on that message."""

    user: str
    channel: str
    message_ts: str | None = None


def truthy(value: object) -> bool:
    return value in (True, 1, "1", "true", "True")


def check_blocks(blocks: object, limit: int, error: str) -> None:
    if not isinstance(blocks, list):
        raise SlackError("invalid_blocks_format")
    if len(blocks) > limit:
        raise SlackError(error, f"[ERROR] no more than {limit} items allowed "
                                "[json-pointer:/blocks]")
    for index, block in enumerate(blocks):
        if not isinstance(block, dict) or not block.get("type"):
            raise SlackError(error, f"[ERROR] missing required field: type "
                                    f"[json-pointer:/blocks/{index}/type]")
        text = block.get("text")
        if (block["type"] == "section" and isinstance(text, dict)
                and len(str(text.get("text", ""))) > MAX_SECTION_TEXT):
            raise SlackError(error, f"[ERROR] must be less than {MAX_SECTION_TEXT + 1} "
                                    f"characters [json-pointer:/blocks/{index}/text/text]")


def _text_in(value: object) -> int:
    """The characters of every text string in some blocks."""
    if isinstance(value, dict):
        return sum(len(v) if k == "text" and isinstance(v, str) else _text_in(v)
                   for k, v in value.items())
    if isinstance(value, list):
        return sum(_text_in(item) for item in value)
    return 0


class WebApi:
    """The workspace's contents and the methods on them; see the module docstring."""

    def __init__(self, *, team_id: str, team: str, bot_user_id: str, bot_id: str,
                 app_id: str) -> None:
        self.team_id, self.team = team_id, team
        self.bot_user_id, self.bot_id, self.app_id = bot_user_id, bot_id, app_id
        self.broken_channels: dict[str, str] = {}  # channel id -> error
        self.messages: dict[str, list[Args]] = {}
        self.ephemerals: list[Args] = []
        self.dms: dict[str, str] = {}  # user id (or sorted ids joined by ",") -> channel id
        self.views: dict[str, Args] = {}
        self.homes: dict[str, str] = {}  # user id -> view id
        self.modals: dict[str, str] = {}  # user id -> view id of the modal open for them
        self.triggers: dict[str, str] = {}  # trigger id issued -> user id
        self.exchanged: set[str] = set()  # trigger ids a views.open has used
        self.response_targets: dict[str, ResponseTarget] = {}  # response_url name -> target
        self.usergroups: dict[str, Args] = {}
        self.users: dict[str, Args] = {}
        self._counter = 0

    def methods(self) -> dict[str, Callable[[Args], Args]]:
        return {
            "auth.test": self.auth_test,
            "chat.postMessage": self.post_message,
            "chat.update": self.update,
            "chat.postEphemeral": self.post_ephemeral,
            "conversations.open": self.open_conversation,
            "views.open": self.open_view,
            "views.update": self.update_view,
            "views.publish": self.publish_view,
            "usergroups.list": self.list_usergroups,
            "usergroups.users.list": self.list_usergroup_users,
            "users.info": self.user_info,
        }

    # -- helpers -----------------------------------------------------------------------

    def new_id(self, prefix: str) -> str:
        self._counter += 1
        digest = hashlib.sha256(f"{prefix}{self._counter}".encode()).hexdigest()
        return prefix + digest[:10].upper()

    def next_ts(self) -> str:
        self._counter += 1
        micros = self._counter * 100
        return f"{TS_EPOCH + micros // 1_000_000}.{micros % 1_000_000:06d}"

    def issue_trigger(self, user: str) -> str:
        """A trigger id for an interaction by `user`: views.open with it opens their modal."""
        self._counter += 1
        trigger = f"{TS_EPOCH + self._counter}.{secrets.randbelow(10**9)}.{secrets.token_hex(16)}"
        self.triggers[trigger] = user
        return trigger

    def dm_for(self, users: list[str]) -> tuple[str, bool]:
        """The DM (or group DM) channel for `users`, and whether it already existed."""
        key = ",".join(sorted(users))
        existed = key in self.dms
        if not existed:
            self.dms[key] = self.new_id("D" if len(users) == 1 else "G")
        return self.dms[key], existed

    def resolve(self, channel: str) -> str:
        """Slack posts to a user id (U.../W...) in the DM with that user."""
        if channel[:1] in ("U", "W"):
            return self.dm_for([channel])[0]
        return channel

    def _channel_arg(self, args: Args) -> str:
        channel = args.get("channel")
        if not isinstance(channel, str) or not channel:
            raise SlackError("channel_not_found")
        if channel in self.broken_channels:
            raise SlackError(self.broken_channels[channel])
        return self.resolve(channel)

    @staticmethod
    def _check_content(args: Args) -> None:
        text = args.get("text")
        if not text and not args.get("blocks") and not args.get("attachments"):
            raise SlackError("no_text")
        if isinstance(text, str) and len(text) > MAX_TEXT:
            raise SlackError("msg_too_long")
        if "blocks" in args:
            check_blocks(args["blocks"], MAX_BLOCKS, "invalid_blocks")
            if _text_in(args["blocks"]) > MAX_BLOCKS_TEXT:
                raise SlackError("msg_blocks_too_long")

    def find(self, channel: str, ts: object) -> Args:
        for stored in self.messages.get(channel, []):
            if stored["ts"] == ts:
                return stored
        raise SlackError("message_not_found")

    def message_body(self, stored: Args) -> Args:
        """A stored message as Slack shows it (in answers and interaction payloads)."""
        body: Args = {"type": "message", "text": stored["text"], "user": self.bot_user_id,
                      "bot_id": self.bot_id}
        for key in ("blocks", "attachments", "thread_ts"):
            if stored.get(key) is not None:
                body[key] = copy.deepcopy(stored[key])
        return body

    def add_ephemeral(self, channel: str, user: str, args: Args) -> str:
        """Store an ephemeral message `user` sees in `channel`; its ts."""
        ts = self.next_ts()
        self.ephemerals.append({
            "channel": channel, "user": user, "ts": ts, "text": args.get("text") or "",
            "blocks": args.get("blocks"), "args": copy.deepcopy(args),
        })
        return ts

    def respond(self, name: str, args: Args) -> bool:
        """Do what a post to response_url `name` does in Slack; False if the URL has no
        target (tests only record such posts)."""
        target = self.response_targets.get(name)
        if target is None:
            return False
        if target.message_ts and truthy(args.get("delete_original")):
            kept = [m for m in self.messages.get(target.channel, [])
                    if m["ts"] != target.message_ts]
            self.messages[target.channel] = kept
        elif target.message_ts and truthy(args.get("replace_original")):
            self.update({**args, "channel": target.channel, "ts": target.message_ts})
        elif args.get("response_type") == "in_channel":
            self.post_message({**args, "channel": target.channel})
        else:
            self._check_content(args)
            self.add_ephemeral(target.channel, target.user, args)
        return True

    # -- methods -----------------------------------------------------------------------

    def auth_test(self, args: Args) -> Args:
        return {"url": f"https://{self.team}.slack.com/", "team": self.team, "user": "jit",
                "team_id": self.team_id, "user_id": self.bot_user_id, "bot_id": self.bot_id,
                "is_enterprise_install": False}

    def post_message(self, args: Args) -> Args:
        channel = self._channel_arg(args)
        self._check_content(args)
        ts = self.next_ts()
        stored: Args = {
            "channel": channel, "ts": ts, "thread_ts": args.get("thread_ts") or None,
            "text": args.get("text") or "", "blocks": args.get("blocks"),
            "attachments": args.get("attachments"), "args": copy.deepcopy(args), "edits": [],
        }
        self.messages.setdefault(channel, []).append(stored)
        return {"channel": channel, "ts": ts, "message": {**self.message_body(stored), "ts": ts}}

    def update(self, args: Args) -> Args:
        channel = self._channel_arg(args)
        stored = self.find(channel, args.get("ts"))
        self._check_content(args)
        for key in ("text", "blocks", "attachments"):  # omitted fields keep their old value
            if key in args:
                stored[key] = args[key]
        stored["edits"].append(copy.deepcopy(args))
        return {"channel": channel, "ts": stored["ts"], "text": stored["text"],
                "message": self.message_body(stored)}

    def post_ephemeral(self, args: Args) -> Args:
        channel = self._channel_arg(args)
        if not args.get("user"):
            raise SlackError("user_not_in_channel")
        self._check_content(args)
        return {"message_ts": self.add_ephemeral(channel, args["user"], args)}

    def open_conversation(self, args: Args) -> Args:
        users = args.get("users") or ""
        members = users if isinstance(users, list) else [u for u in users.split(",") if u]
        if not members:
            raise SlackError("users_list_not_supplied")
        channel_id, existed = self.dm_for(members)
        channel: Args = {"id": channel_id}
        if truthy(args.get("return_im")):
            channel.update({
                "created": TS_EPOCH, "is_archived": False, "is_im": len(members) == 1,
                "is_org_shared": False, "user": members[0], "last_read": "0000000000.000000",
                "unread_count": 0, "unread_count_display": 0, "is_open": True, "priority": 0,
                "context_team_id": self.team_id,
            })
        return {"no_op": existed, "already_open": existed, "channel": channel}

    def _store_view(self, submitted: object, kinds: tuple[str, ...], view_id: str | None = None,
                    root_view_id: str | None = None) -> Args:
        if not isinstance(submitted, dict) or submitted.get("type") not in kinds:
            raise SlackError("invalid_arguments",
                             f"[ERROR] must be a view of type {' or '.join(kinds)} "
                             "[json-pointer:/view/type]")
        if submitted["type"] == "modal" and not submitted.get("title"):
            raise SlackError("invalid_arguments",
                             "[ERROR] missing required field: title [json-pointer:/view/title]")
        blocks = submitted.get("blocks", [])
        check_blocks(blocks, MAX_VIEW_BLOCKS, "invalid_arguments")
        view_id = view_id or self.new_id("V")
        view: Args = {
            "id": view_id, "team_id": self.team_id, "type": submitted["type"],
            "blocks": copy.deepcopy(blocks),
            "private_metadata": submitted.get("private_metadata", ""),
            "callback_id": submitted.get("callback_id", ""),
            "external_id": submitted.get("external_id", ""), "state": {"values": {}},
            "hash": f"{TS_EPOCH + self._counter}.{self.new_id('')[:8].lower()}",
            "clear_on_close": bool(submitted.get("clear_on_close", False)),
            "notify_on_close": bool(submitted.get("notify_on_close", False)),
            "root_view_id": root_view_id or view_id, "previous_view_id": None,
            "app_id": self.app_id, "app_installed_team_id": self.team_id, "bot_id": self.bot_id,
        }
        for key in ("title", "submit", "close", "submit_disabled"):
            if key in submitted:
                view[key] = copy.deepcopy(submitted[key])
        self.views[view_id] = view
        return {"view": copy.deepcopy(view)}

    def open_view(self, args: Args) -> Args:
        """A trigger the stand-in issued opens a modal for its user, once; any other
        trigger id is taken as valid (tests make up their own) and opens it for nobody."""
        trigger = args.get("trigger_id")
        if not trigger:
            raise SlackError("invalid_arguments", "[ERROR] missing required field: trigger_id")
        if trigger in self.exchanged:
            raise SlackError("exchanged_trigger_id")
        opened = self._store_view(args.get("view"), ("modal",))
        user = self.triggers.pop(str(trigger), None)
        if user is not None:
            self.exchanged.add(str(trigger))
            self.modals[user] = opened["view"]["id"]
        return opened

    def update_view(self, args: Args) -> Args:
        external_id = args.get("external_id")
        view_id = args.get("view_id") or next(
            (v["id"] for v in self.views.values() if external_id and
             v["external_id"] == external_id), None)
        if view_id not in self.views:
            raise SlackError("not_found")
        current = self.views[view_id]
        if args.get("hash") and args["hash"] != current["hash"]:
            raise SlackError("hash_conflict")
        return self._store_view(args.get("view"), (current["type"],), view_id,
                                current["root_view_id"])

    def publish_view(self, args: Args) -> Args:
        user = args.get("user_id")
        if not user:
            raise SlackError("invalid_arguments", "[ERROR] missing required field: user_id")
        published = self._store_view(args.get("view"), ("home",), self.homes.get(user))
        self.homes[user] = published["view"]["id"]
        return published

    def list_usergroups(self, args: Args) -> Args:
        groups = [copy.deepcopy(group) for group in self.usergroups.values()]
        if not truthy(args.get("include_users")):
            for group in groups:
                del group["users"]
        return {"usergroups": groups}

    def list_usergroup_users(self, args: Args) -> Args:
        group = self.usergroups.get(args.get("usergroup") or "")
        if group is None:
            raise SlackError("no_such_subteam")
        return {"users": list(group["users"])}

    def user_info(self, args: Args) -> Args:
        user = self.users.get(args.get("user") or "")
        if user is None:
            raise SlackError("user_not_found")
        return {"user": copy.deepcopy(user)}
