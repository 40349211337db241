"""Modals: the request form, and the approver's reason for a denial."""

from __future__ import annotations

from collections.abc import Sequence

from bot.blocks.kit import DENY_MODAL, MAX_OPTIONS, REQUEST_MODAL, Block, View, plain, section
from jitcore.policy import MAX_REASON_CHARS

REASON_INPUT_MAX = MAX_REASON_CHARS  # Slack stops the typing where policy would refuse it


def _modal(callback_id: str, title: str, blocks: list[Block], submit: str | None,
           private_metadata: str = "") -> View:
    view: View = {"type": "modal", "callback_id": callback_id, "title": plain(title, 24),
                  "close": plain("Cancel", 24), "blocks": blocks}
    if submit:
        view["submit"] = plain(submit, 24)
    if private_metadata:
        view["private_metadata"] = private_metadata
    return view


def _input(block_id: str, label: str, element: Block, *, optional: bool = False,
           hint: str = "") -> Block:
    block: Block = {"type": "input", "block_id": block_id, "label": plain(label, 2000),
                    "optional": optional, "element": {**element, "action_id": block_id}}
    if hint:
        block["hint"] = plain(hint, 2000)
    return block


def _text_input(initial: str | None, placeholder: str, max_length: int,
                multiline: bool = False) -> Block:
    element: Block = {"type": "plain_text_input", "multiline": multiline,
                      "max_length": max_length, "placeholder": plain(placeholder, 150)}
    if initial:
        element["initial_value"] = initial[:max_length]  # an input value: not escaped
    return element


def _select(options: Sequence[str], initial: str | None, placeholder: str) -> Block:
    shown = list(dict.fromkeys(options))
    if len(shown) > MAX_OPTIONS:
        kept = shown[:MAX_OPTIONS]
        if initial in shown and initial not in kept:
            kept[-1] = initial  # the prefilled choice must stay choosable
        shown = kept
    element: Block = {"type": "static_select", "placeholder": plain(placeholder, 150),
                      "options": [_option(o) for o in shown]}
    if initial in shown:
        element["initial_option"] = _option(initial)
    return element


def _option(value: str) -> Block:
    return {"text": plain(value), "value": value[:150]}


def deny_modal(grant_id: int) -> View:
    """Asks the approver why; the reason goes to the requester and the audit channel."""
    return _modal(DENY_MODAL, "Deny request", [
        section(f"Deny request *#{grant_id}*? The requester sees your reason."),
        _input("reason", "Reason", _text_input(None, "Why not, or what to do instead",
                                               REASON_INPUT_MAX, multiline=True)),
    ], "Deny", private_metadata=str(grant_id))


def request_modal(prefill: dict[str, str], targets: list[str], services: list[str]) -> View:
    """The request form, prefilled with what is known (the last source this person declared)."""
    if not targets or not services:
        return _modal(REQUEST_MODAL, "Request access", [section(
            "There is nothing you may ask for: no target lists you as a requester. "
            "Ask the jit admins to add you to the policy.")], None)
    return _modal(REQUEST_MODAL, "Request access", [
        _input("service", "Service", _select(services, prefill.get("service"), "ssh, rdp ...")),
        _input("target", "Target", _select(targets, prefill.get("target") or (
            targets[0] if len(targets) == 1 else None), "Choose a target")),
        _input("duration", "Duration", _text_input(prefill.get("duration"), "30m, 2h or 1h30m",
                                                   32)),
        _input("source", "Your source address", _text_input(
            prefill.get("source"), "203.0.113.7", 64),
            hint="The public address your connection comes from; only it is let in."),
        _input("reason", "Reason", _text_input(prefill.get("reason"), "What you need to do",
                                               REASON_INPUT_MAX, multiline=True), optional=True),
    ], "Request")
