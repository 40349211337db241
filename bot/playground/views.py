"""Reading messages and views the way Slack's client does: what the page shows, which element
a click is on, and what a modal's inputs hold when it is submitted.

Slack's client, not the app, enforces some things: a required input left empty, or a text
shorter than its `min_length`, is marked in the modal and nothing is sent; a text never grows
past its `max_length`. `missing_required` says what it would mark.
"""

from __future__ import annotations

from typing import Any

Payload = dict[str, Any]
REQUIRED = "Please complete this required field."
_SELECTS = ("static_select", "overflow", "radio_buttons")
_VIEW_FIELDS = ("id", "type", "title", "blocks", "submit", "close", "callback_id",
                "private_metadata")


class ViewProblem(ValueError):
    """What the page sent does not fit the element or view it names."""


def page_message(stored: Payload, replies: list[Payload]) -> Payload:
    return {"ts": stored["ts"], "text": stored.get("text") or "", "blocks": stored.get("blocks"),
            "replies": replies, "channel": stored["channel"]}


def thread_messages(stored: list[Payload]) -> list[Payload]:
    """Top-level messages, oldest first, each with its thread's replies nested; a reply
    whose parent is not there is shown at the top level."""
    parents = {m["ts"] for m in stored if m.get("thread_ts") in (None, m["ts"])}
    replies: dict[str, list[Payload]] = {}
    for message in stored:
        if message["ts"] not in parents and message.get("thread_ts") in parents:
            replies.setdefault(message["thread_ts"], []).append(page_message(message, []))
    return [page_message(m, replies.get(m["ts"], [])) for m in stored
            if m["ts"] in parents or m.get("thread_ts") not in parents]


def page_view(view: Payload | None) -> Payload | None:
    """A view as jit sent it (and the stand-in stored it), for the page to draw."""
    if view is None:
        return None
    return {field: view.get(field) for field in _VIEW_FIELDS}


def _elements(block: Payload) -> list[Payload]:
    found = [block[key] for key in ("accessory", "element") if isinstance(block.get(key), dict)]
    elements = block.get("elements")
    if block.get("type") == "actions" and isinstance(elements, list):
        found += [element for element in elements if isinstance(element, dict)]
    return found


def find_element(blocks: list[Any], block_id: str, action_id: str) -> tuple[str, Payload] | None:
    """The element `action_id` (in block `block_id`, if given): its block's id, and it."""
    for block in blocks:
        if not isinstance(block, dict) or (block_id and block.get("block_id") != block_id):
            continue
        for element in _elements(block):
            if element.get("action_id") == action_id:
                return str(block.get("block_id") or block_id), element
    return None


def _options(element: Payload) -> list[Payload]:
    options = [o for o in element.get("options") or [] if isinstance(o, dict)]
    for group in element.get("option_groups") or []:
        if isinstance(group, dict):
            options += [o for o in group.get("options") or [] if isinstance(o, dict)]
    return options


def _chosen(element: Payload, chosen: object) -> Payload | None:
    """The element's own option whose value the page chose (None: nothing chosen)."""
    if chosen is None:
        return None
    value = chosen.get("value") if isinstance(chosen, dict) else None
    for option in _options(element):
        if option.get("value") == value:
            return option
    offered = ", ".join(repr(o.get("value")) for o in _options(element))
    raise ViewProblem(f"selected_option must have the value of one of the options of "
                      f"{element.get('action_id')!r}: {offered}")


def selected_action(block_id: str, element: Payload, body: Payload) -> Payload:
    """The `actions` entry Slack sends for a click on `element` (a button sends the value
    jit put on it, whatever the page says) or a choice in it (`body["selected_option"]`)."""
    kind = element.get("type")
    action: Payload = {"type": kind, "action_id": element.get("action_id"),
                       "block_id": block_id}
    if kind == "button":
        action.update({key: element[key] for key in ("text", "value", "style")
                       if key in element})
    elif kind in _SELECTS:
        option = _chosen(element, body.get("selected_option"))
        if option is None:
            raise ViewProblem(f"a choice in {element.get('action_id')!r} needs "
                              "'selected_option'")
        action["selected_option"] = option
    else:
        raise ViewProblem(f"the playground cannot act on a {kind} element")
    return action


def _inputs(view: Payload) -> dict[str, Payload]:
    """The view's input blocks by block_id."""
    return {str(block["block_id"]): block for block in view.get("blocks") or []
            if isinstance(block, dict) and block.get("type") == "input"
            and block.get("block_id") and isinstance(block.get("element"), dict)}


def _initial(element: Payload) -> Payload:
    kind = element.get("type")
    if kind == "plain_text_input":
        return {"type": kind, "value": element.get("initial_value") or None}
    if kind in _SELECTS:
        return {"type": kind, "selected_option": element.get("initial_option")}
    return {"type": kind}


def _entered(element: Payload, entered: object) -> Payload:
    kind = element.get("type")
    name = element.get("action_id")
    if not isinstance(entered, dict) or entered.get("type") != kind:
        raise ViewProblem(f"the value of {name!r} must be {{\"type\": \"{kind}\", ...}}")
    if kind == "plain_text_input":
        value = entered.get("value")
        if value is not None and not isinstance(value, str):
            raise ViewProblem(f"the value of {name!r} must be a string or null")
        limit = element.get("max_length")
        if isinstance(value, str) and isinstance(limit, int) and len(value) > limit:
            raise ViewProblem(f"{name!r} takes at most {limit} characters")
        return {"type": kind, "value": value or None}
    if kind in _SELECTS:
        return {"type": kind, "selected_option": _chosen(element, entered.get("selected_option"))}
    raise ViewProblem(f"the playground cannot enter a value in a {kind} element")


def state_values(view: Payload, entered: Payload) -> Payload:
    """`view.state.values` as Slack sends it: every input block, holding its initial value
    unless the page entered another ({block_id: {action_id: {"type", ...}}})."""
    inputs = _inputs(view)
    values: Payload = {block_id: {block["element"].get("action_id"): _initial(block["element"])}
                       for block_id, block in inputs.items()}
    for block_id, actions in entered.items():
        block = inputs.get(block_id)
        if block is None:
            raise ViewProblem(f"the view has no input block {block_id!r}; it has "
                              f"{', '.join(inputs) or 'none'}")
        if not isinstance(actions, dict):
            raise ViewProblem(f"values[{block_id!r}] must be {{action_id: {{...}}}}")
        for action_id, value in actions.items():
            if action_id != block["element"].get("action_id"):
                raise ViewProblem(f"input block {block_id!r} has no element {action_id!r}")
            values[block_id][action_id] = _entered(block["element"], value)
    return values


def missing_required(view: Payload) -> dict[str, str]:
    """What Slack's client marks in a modal with these `state.values` ({block_id: error});
    empty when it sends the submission."""
    values = view.get("state", {}).get("values", {})
    errors: dict[str, str] = {}
    for block_id, block in _inputs(view).items():
        element = block["element"]
        entry = values.get(block_id, {}).get(element.get("action_id"), {})
        filled = entry.get("value") or entry.get("selected_option")
        if entry.get("type") not in ("plain_text_input", *_SELECTS):
            continue
        if not filled and not block.get("optional"):
            errors[block_id] = REQUIRED
        least = element.get("min_length")
        if isinstance(entry.get("value"), str) and isinstance(least, int) \
                and len(entry["value"]) < least:
            errors[block_id] = f"Please enter at least {least} characters."
    return errors
