"""SlackNotifier: jitcore's Notifier port, spoken in Slack.

Every event becomes a reply in the request's thread in the audit channel (the request is
the thread's parent); decisions and outcomes update the approval card in place; the
requester hears back by DM; failures are also raised in the audit channel itself.

Slack calls run on one worker thread, in the order events happened, so that neither the
expiry engine nor a listener waits on Slack, and a reply never comes before its parent.
Given a `Foreground`, the worker lets the acks go first: before each event it waits for a
moment when no Slack request is being answered, but never longer than `yield_at_most`.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot import blocks
from bot.app import Foreground
from jitcore.domain import EventKind, GrantEvent, GrantView
from jitcore.policy import Policy
from jitcore.store import Store
from jitcore.store import repository as repo

log = logging.getLogger(__name__)

AUDIT_THREAD = "audit_thread"
APPROVAL_CARD = "approval_card"

# What the approval card says once the request has moved on.
_CARD_OUTCOME: dict[EventKind, Callable[[GrantEvent], str]] = {
    EventKind.APPROVED: lambda e: f"approved by <@{e.actor}>, opening…",
    EventKind.AUTO_APPROVED: lambda e: "approved by policy, opening…",
    EventKind.DENIED: lambda e: f"denied by <@{e.actor}>"
                                + (f": {blocks.escape(e.detail)}" if e.detail else ""),
    EventKind.CANCELLED: lambda e: "cancelled by the requester",
    EventKind.LAPSED: lambda e: "lapsed: no decision in time",
    EventKind.OPENED: lambda e: f"open until {_hhmm(e.grant)} UTC",
    EventKind.OPEN_FAILED: lambda e: f"failed: {blocks.escape(e.detail)}",
    EventKind.CLOSED: lambda e: f"closed ({e.grant.close_reason or 'done'})",
}


def _hhmm(grant: GrantView) -> str:
    return f"{grant.expires_at:%H:%M}" if grant.expires_at else "?"


class SlackNotifier:
    def __init__(self, client: WebClient, policy: Policy, store: Store,
                 foreground: Foreground | None = None, yield_at_most: float = 1.0) -> None:
        if policy.slack is None:
            raise ValueError("the policy has no slack section (approvals_channel, audit_channel)")
        self._client = client
        self._policy = policy
        self._channels = policy.slack
        self._store = store
        self._foreground = foreground
        self._yield_at_most = yield_at_most
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="jit-slack", daemon=True)
        self._worker.start()

    # ---- the Notifier port ------------------------------------------------------------

    def publish(self, event: GrantEvent) -> None:
        self._queue.put(lambda: self._deliver(event))

    def alert(self, message: str) -> None:
        text = f":rotating_light: {blocks.escape(message)}"
        self._queue.put(lambda: self._say(self._channels.audit_channel, text))

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far has been sent (or failed)."""
        done = threading.Event()
        self._queue.put(done.set)
        done.wait(timeout)

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=10)

    # ---- delivery -----------------------------------------------------------------------

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            if self._foreground is not None:
                self._foreground.wait_quiet(self._yield_at_most)
            try:
                job()
            except SlackApiError as exc:  # Slack said no: log it, keep the worker alive
                log.error("slack: %s failed: %s", exc.response.get("error"), exc)
            except Exception:  # a bug in rendering must not stop later notifications
                log.exception("slack notification failed")

    def _deliver(self, event: GrantEvent) -> None:
        grant = event.grant
        if event.kind is EventKind.REQUESTED:
            self._open_thread(event)
        else:
            self._reply(grant.id, blocks.audit_line(event))
        if event.alert:
            self._say(self._channels.audit_channel, f":rotating_light: {blocks.audit_line(event)}")
        outcome = _CARD_OUTCOME.get(event.kind)
        if outcome is not None:
            self._update_card(grant, outcome(event))
        dm = blocks.dm_for(event)
        if event.kind is EventKind.EXPIRING and grant.expires_at is not None:
            left = (grant.expires_at - event.at).total_seconds()
            dm = blocks.expiry_warning(grant, max(1, round(left / 60)))
        if dm is not None:
            self._client.chat_postMessage(channel=grant.requester, unfurl_links=False,
                                          unfurl_media=False, **dm)

    def _open_thread(self, event: GrantEvent) -> None:
        grant = event.grant
        parent = self._post(self._channels.audit_channel, blocks.audit_line(event))
        target = self._policy.targets.get(grant.target)
        card: dict[str, Any] | None = None
        if target is not None:
            card = self._client.chat_postMessage(
                channel=self._channels.approvals_channel, unfurl_links=False,
                unfurl_media=False, **blocks.approval_card(grant, target)).data  # type: ignore[assignment]
        with self._store.transaction() as session:
            repo.save_notice(session, grant.id, AUDIT_THREAD, parent["channel"], parent["ts"])
            if card is not None:
                repo.save_notice(session, grant.id, APPROVAL_CARD, card["channel"], card["ts"])

    def _reply(self, grant_id: int, text: str) -> None:
        with self._store.read() as session:
            thread = repo.notice(session, grant_id, AUDIT_THREAD)
        if thread is None:  # requested before this notifier existed: start a thread now
            self._post(self._channels.audit_channel, text)
            return
        self._client.chat_postMessage(channel=thread.channel, thread_ts=thread.ref, text=text,
                                      unfurl_links=False, unfurl_media=False)

    def _update_card(self, grant: GrantView, outcome: str) -> None:
        target = self._policy.targets.get(grant.target)
        with self._store.read() as session:
            card = repo.notice(session, grant.id, APPROVAL_CARD)
        if card is None or target is None:
            return
        self._client.chat_update(channel=card.channel, ts=card.ref,
                                 **blocks.decided_card(grant, target, outcome))

    def _say(self, channel: str, text: str) -> None:
        self._post(channel, text)

    def _post(self, channel: str, text: str) -> dict[str, Any]:
        response = self._client.chat_postMessage(channel=channel, text=text,
                                                 unfurl_links=False, unfurl_media=False)
        return response.data  # type: ignore[return-value]
