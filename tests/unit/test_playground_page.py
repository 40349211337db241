"""The playground's page (bot/playground/static): shipped whole, offline, built without
markup from message content, and its Block Kit and mrkdwn renderer run under node against
what jit's own builders produce."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot import blocks
from jitcore.domain import GrantView, Status
from jitcore.policy import AwsLocation, PortPolicy, Target

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "bot" / "playground" / "static"
FILES = ("index.html", "app.js", "style.css")
RILEY, AVERY = "U0RILEY", "U0AVERY"
PEOPLE = {RILEY: "Riley", AVERY: "Avery"}
CHANNELS = {"C0AUDIT": "jit-audit"}
T0 = datetime(2024, 5, 1, 14, 0, tzinfo=UTC)
TARGET = Target(
    name="demo-vm", location=AwsLocation(region="us-east-1", security_group_id="sg-0demo1"),
    ports={"ssh": PortPolicy("ssh", 22)}, requesters=("*",), approvers=(AVERY,),
    max_duration=timedelta(hours=3), approval_timeout=timedelta(hours=1))
GRANT = GrantView(
    id=42, status=Status.PENDING, requester=RILEY, target="demo-vm", cloud="aws",
    service="ssh", port=22, protocol="tcp", source="203.0.113.7/32",
    duration=timedelta(minutes=30), reason="fix <b>replication</b> & more", created_at=T0)
ACTIVE = dataclasses.replace(GRANT, status=Status.ACTIVE, decided_by=AVERY, decided_at=T0,
                             opened_at=T0, expires_at=T0 + timedelta(minutes=30),
                             rule_ref="sgr-0abc")


# ---- shipped, offline, no markup -------------------------------------------------------------

def test_the_three_files_are_there_and_the_page_links_them_relatively() -> None:
    """The page is served at / and its files under /static/ (bot/playground/workspace.py)."""
    for name in FILES:
        assert (STATIC / name).is_file(), f"bot/playground/static/{name} is missing"
    page = (STATIC / "index.html").read_text()
    assert re.search(r'<link rel="stylesheet" href="static/style\.css">', page)
    assert re.search(r'<script src="static/app\.js"></script>', page)
    assert "playground: not connected to Slack or any cloud" in page


def test_the_fixed_parts_of_the_page_carry_their_test_ids() -> None:
    page = (STATIC / "index.html").read_text()
    ids = set(re.findall(r'data-testid="([^"]+)"', page))
    assert {"banner", "dms", "home", "composer", "send", "rules", "policy"} <= ids
    assert re.search(r'<label for="composer"', page)  # the composer is labelled


@pytest.mark.parametrize("name", FILES)
def test_nothing_is_fetched_from_elsewhere(name: str) -> None:
    text = (STATIC / name).read_text()
    assert re.search(r"https?://", text, re.IGNORECASE) is None
    assert re.search(r"""(?:src|href|url)\s*[=(]\s*["']?//""", text) is None  # scheme-relative
    assert "@import" not in text


def test_app_js_never_turns_text_into_markup_or_code() -> None:
    source = (STATIC / "app.js").read_text()
    for forbidden in (r"innerHTML", r"outerHTML", r"insertAdjacentHTML", r"document\.write",
                      r"\beval\s*\(", r"\bnew\s+Function\b", r"\bFunction\s*\(",
                      r"set(?:Timeout|Interval)\s*\(\s*['\"`]"):
        assert re.search(forbidden, source) is None, forbidden


def test_the_distribution_ships_the_page() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["bot.playground"]
    package = ROOT / "bot" / "playground"
    shipped = {p.relative_to(package).as_posix() for pattern in patterns
               for p in package.glob(pattern)}
    assert {f"static/{name}" for name in FILES} <= shipped


# ---- the renderer, under node ----------------------------------------------------------------

# A document just big enough for the renderer: elements, text nodes, attributes, listeners.
# Reading or writing innerHTML throws, so a renderer that reaches for it fails here too.
SHIM = r"""
class N { constructor() { this.childNodes = []; this.parentNode = null; }
  appendChild(c) { if (c.parentNode) c.parentNode.removeChild(c);
    c.parentNode = this; this.childNodes.push(c); return c; }
  removeChild(c) { const i = this.childNodes.indexOf(c);
    if (i < 0) throw new Error("not a child"); this.childNodes.splice(i, 1);
    c.parentNode = null; return c; }
  get textContent() { return this.childNodes.map((c) => c.textContent).join(""); }
  set textContent(v) { this.childNodes = []; this.appendChild(new T(String(v))); } }
class T extends N { constructor(t) { super(); this.data = t; }
  get textContent() { return this.data; } }
class E extends N { constructor(tag) { super(); this.tagName = tag.toUpperCase();
    this.attributes = {}; this.listeners = {}; }
  setAttribute(n, v) { this.attributes[n] = String(v); }
  getAttribute(n) { return n in this.attributes ? this.attributes[n] : null; }
  addEventListener(t, f) { (this.listeners[t] = this.listeners[t] || []).push(f); }
  fire(t) { (this.listeners[t] || []).forEach((f) => f({ type: t, target: this,
    preventDefault() {} })); } }
for (const name of ["innerHTML", "outerHTML"]) {
  Object.defineProperty(E.prototype, name, {
    get() { throw new Error(name + " read"); }, set() { throw new Error(name + " written"); } });
}
const doc = { createElement: (t) => new E(t), createTextNode: (t) => new T(String(t)) };
const all = (root, keep) => { const out = [];
  const walk = (n) => { if (n instanceof E && keep(n)) out.push(n); n.childNodes.forEach(walk); };
  walk(root); return out; };
const byTestId = (root, id) => all(root, (e) => e.getAttribute("data-testid") === id);
// What a reader sees: the text, with a line break for each <br>.
const readable = (n) => n instanceof T ? n.data
  : n.tagName === "BR" ? "\n" : n.childNodes.map(readable).join("");
// An element as [TAG, {attributes}, ...children]; a text node as its string.
const tree = (n) => n instanceof T ? n.data
  : [n.tagName, n.attributes, ...n.childNodes.map(tree)];
const app = require(process.argv[2]);
const acted = [];
const confirms = [];
const ctx = (extra) => Object.assign({ people: PEOPLE, channels: CHANNELS, me: ME,
  container: { type: "message", channel: "C0AUDIT", ts: "1.000001" },
  act: (action, control) => acted.push({ action, control: control.getAttribute("data-testid") }),
  confirm: (confirm, proceed) => confirms.push({ confirm, proceed }) }, extra || {});
"""


def run_node(tmp_path: Path, script: str, **data: Any) -> Any:
    """Runs `script` after the shim, with each of `data` bound as a JS constant; returns what
    the script passed to `done(...)`."""
    node = shutil.which("node")
    assert node, ("node is not on PATH: the playground page's renderer is tested with it; "
                  "install it (Debian: apt-get install nodejs)")
    constants = {"PEOPLE": PEOPLE, "CHANNELS": CHANNELS, "ME": RILEY, **data}
    prelude = "".join(f"const {name} = {json.dumps(value)};\n" for name, value in constants.items())
    path = tmp_path / "run.js"
    path.write_text(prelude + SHIM + "const done = (r) => console.log(JSON.stringify(r));\n"
                    + script)
    result = subprocess.run([node, str(path), str(STATIC / "app.js")], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_mrkdwn_is_read_the_way_slack_reads_it(tmp_path: Path) -> None:
    text = ("*Target*\n_none given_ ~gone~ `a*b*c` snake_case_name 5 * 3 * 2 :key: :nope:\n"
            "&lt;b&gt; &amp;lt; <@U0AVERY> <#C0AUDIT|audit> <!here>\n>quoted *bold*\n>more\nafter\n"
            "```pre *not bold*\n&lt;x&gt;```")
    nodes = run_node(tmp_path, "done(app.parseMrkdwn(TEXT));", TEXT=text)
    assert nodes == [
        {"type": "bold", "children": [{"type": "text", "text": "Target"}]},
        {"type": "br"},
        {"type": "italic", "children": [{"type": "text", "text": "none given"}]},
        {"type": "text", "text": " "},
        {"type": "strike", "children": [{"type": "text", "text": "gone"}]},
        {"type": "text", "text": " "},
        {"type": "code", "text": "a*b*c"},
        {"type": "text", "text": " snake_case_name 5 * 3 * 2 "},
        {"type": "emoji", "name": "key", "text": "\U0001F511"},
        {"type": "text", "text": " :nope:"},
        {"type": "br"},
        {"type": "text", "text": "<b> &lt; "},
        {"type": "user", "id": "U0AVERY", "label": ""},
        {"type": "text", "text": " "},
        {"type": "channel", "id": "C0AUDIT", "label": "audit"},
        {"type": "text", "text": " "},
        {"type": "broadcast", "text": "@here"},
        {"type": "quote", "children": [
            {"type": "text", "text": "quoted "},
            {"type": "bold", "children": [{"type": "text", "text": "bold"}]},
            {"type": "br"}, {"type": "text", "text": "more"}]},
        {"type": "text", "text": "after"},
        {"type": "pre", "text": "pre *not bold*\n<x>"},
    ]


def test_mrkdwn_becomes_elements_and_text_never_markup(tmp_path: Path) -> None:
    text = ("&lt;img src=x onerror=alert(1)&gt; <javascript:alert(1)|click> "
            "<https://example.org/?a=1&amp;b=2|the docs> <@U0RILEY> <@U0AVERY> <@U0NOBODY>")
    rendered = run_node(tmp_path, "done(tree(app.renderMrkdwn(doc, TEXT, ctx())));", TEXT=text)
    assert rendered == [
        "SPAN", {"class": "mrkdwn"},
        "<img src=x onerror=alert(1)> <javascript:alert(1)|click> ",
        ["A", {"href": "https://example.org/?a=1&b=2", "target": "_blank",
               "rel": "noopener noreferrer"}, "the docs"],
        " ",
        ["SPAN", {"class": "mention mention-me", "data-user": RILEY}, "@Riley"],
        " ",
        ["SPAN", {"class": "mention", "data-user": AVERY}, "@Avery"],
        " ",
        ["SPAN", {"class": "mention", "data-user": "U0NOBODY"}, "@U0NOBODY"],
    ]


def test_the_approval_card_renders_with_working_buttons(tmp_path: Path) -> None:
    card = blocks.approval_card(GRANT, TARGET)
    got = run_node(tmp_path, """
        const body = app.renderMessageBody(doc, CARD, ctx());
        const buttons = all(body, (e) => e.tagName === "BUTTON");
        byTestId(body, "button-jit_approve")[0].fire("click");
        done({ text: body.textContent, acted,
          buttons: buttons.map((b) => [b.getAttribute("data-testid"),
            b.getAttribute("data-value"), b.getAttribute("class"), b.textContent]),
          fields: all(body, (e) => e.getAttribute("class") === "section-field")
            .map(readable) });
    """, CARD=card)
    assert got["buttons"] == [["button-jit_approve", "42", "btn btn-primary", "Approve"],
                              ["button-jit_deny", "42", "btn btn-danger", "Deny"]]
    assert got["acted"] == [{"action": {"action_id": "jit_approve", "block_id": "jit_decide:42",
                                        "value": "42"}, "control": "button-jit_approve"}]
    assert got["fields"] == ["Target\ndemo-vm · aws us-east-1 sg-0demo1", "Port\nssh tcp/22",
                             "Source\n203.0.113.7/32", "Duration\n30m"]
    assert "request from @Riley" in got["text"]
    assert "fix <b>replication</b> & more" in got["text"]
    assert "[unsupported" not in got["text"]


def test_a_button_with_a_confirm_asks_before_it_acts(tmp_path: Path) -> None:
    home = blocks.home_view([ACTIVE], [], [])
    got = run_node(tmp_path, """
        const body = app.renderBlocks(doc, HOME.blocks,
          ctx({ container: { type: "view", view_id: "V1" } }));
        byTestId(body, "button-jit_revoke")[0].fire("click");
        const before = acted.length;
        confirms[0].proceed();
        done({ before, acted, confirm: confirms.map((c) => c.confirm),
          headers: all(body, (e) => e.tagName === "H3").map((e) => e.textContent),
          text: body.textContent });
    """, HOME=home)
    assert got["before"] == 0
    assert got["acted"] == [{"action": {"action_id": "jit_revoke",
                                        "block_id": "jit_home_active:42", "value": "42"},
                             "control": "button-jit_revoke"}]
    assert got["confirm"][0]["confirm"]["text"] == "Revoke"
    assert got["headers"] == ["Your active grants", "Your pending requests",
                              "Waiting for your approval"]
    assert "[unsupported" not in got["text"]


def test_a_modal_gives_back_its_values_in_view_submission_shape(tmp_path: Path) -> None:
    modal = blocks.request_modal({"source": "203.0.113.7", "service": "ssh"},
                                 ["demo-vm", "other-vm"], ["ssh", "rdp"])
    got = run_node(tmp_path, """
        const inputs = [];
        const body = app.renderBlocks(doc, VIEW.blocks, ctx({ inputs }));
        const control = (id) => byTestId(body, "input-" + id)[0];
        const before = app.collectValues(inputs);
        control("duration").value = "45m";
        control("target").value = "1";
        control("reason").value = "look at <logs>";
        const after = app.collectValues(inputs);
        const left = app.showInputErrors(doc, inputs, { duration: "Too long", nowhere: "Odd" });
        const shown = byTestId(body, "error-duration").map((e) => e.textContent);
        app.showInputErrors(doc, inputs, {});
        done({ before, after, left, shown, cleared: byTestId(body, "error-duration").length,
          tags: inputs.map((i) => control(i.block_id).tagName),
          labels: all(body, (e) => e.tagName === "LABEL").map((e) => e.textContent) });
    """, VIEW=modal)
    ssh = {"text": {"type": "plain_text", "text": "ssh"}, "value": "ssh"}
    other = {"text": {"type": "plain_text", "text": "other-vm"}, "value": "other-vm"}
    assert got["before"]["missing"] == {"target": "Please complete this required field.",
                                        "duration": "Please complete this required field."}
    assert got["after"] == {"missing": {}, "values": {
        "service": {"service": {"type": "static_select", "selected_option": ssh}},
        "target": {"target": {"type": "static_select", "selected_option": other}},
        "duration": {"duration": {"type": "plain_text_input", "value": "45m"}},
        "source": {"source": {"type": "plain_text_input", "value": "203.0.113.7"}},
        "reason": {"reason": {"type": "plain_text_input", "value": "look at <logs>"}},
    }}
    assert got["left"] == ["Odd"]
    assert got["shown"] == ["Too long"]
    assert got["cleared"] == 0
    assert got["tags"] == ["SELECT", "SELECT", "INPUT", "INPUT", "TEXTAREA"]
    assert got["labels"] == ["Service", "Target", "Duration", "Your source address",
                             "Reason (optional)"]


def test_blocks_it_does_not_know_are_named_not_dropped(tmp_path: Path) -> None:
    unknown = [{"type": "rich_text", "elements": []},
               {"type": "actions", "elements": [{"type": "datepicker", "action_id": "d"}]},
               {"type": "context", "elements": [{"type": "plain_text", "text": "still here"}]}]
    text = run_node(tmp_path, "done(app.renderBlocks(doc, BLOCKS, ctx()).textContent);",
                    BLOCKS=unknown)
    assert text == "[unsupported block: rich_text][unsupported element: datepicker]still here"


def test_a_conversation_shows_its_own_ephemerals_and_commands_in_order(tmp_path: Path) -> None:
    def message(ts: str, channel: str) -> dict[str, Any]:
        return {"ts": ts, "text": ts, "blocks": None, "replies": [], "channel": channel}

    state = {
        "channels": [{"id": "C0AUDIT", "name": "jit-audit", "messages": [
            message("5.0", "C0AUDIT"), message("2.0", "C0AUDIT")]}],
        "dms": {RILEY: [message("3.0", "D0RILEY"), message("1.0", "D0RILEY")]},
        "ephemerals": {RILEY: [message("2.5", "D0RILEY"), message("4.0", "C0AUDIT")],
                       AVERY: [message("9.0", "D0AVERY")]},
    }
    sent = [{"text": "/jit help", "after": "2.5"}]
    got = run_node(tmp_path, """
        const show = (where, person) => app.conversationItems(STATE, person, where, SENT)
          .map((i) => [i.kind, i.message.ts || i.message.text]);
        done({ dms: show({ kind: "dms" }, ME), audit: show({ kind: "channel", id: "C0AUDIT" }, ME),
          avery: show({ kind: "channel", id: "C0AUDIT" }, "U0AVERY") });
    """, STATE=state, SENT=sent)
    assert got["dms"] == [["message", "1.0"], ["ephemeral", "2.5"], ["sent", "/jit help"],
                          ["message", "3.0"]]
    assert got["audit"] == [["message", "2.0"], ["ephemeral", "4.0"], ["message", "5.0"]]
    assert got["avery"] == [["message", "2.0"], ["message", "5.0"]]


def test_rules_read_as_protocol_port_and_source(tmp_path: Path) -> None:
    rules = [{"protocol": "tcp", "from_port": 22, "to_port": 22, "cidr": "203.0.113.7/32"},
             {"protocol": "tcp", "from_port": 8000, "to_port": 8010, "cidr": "10.0.0.0/8"},
             {"protocol": "-1", "from_port": None, "to_port": None, "cidr": "0.0.0.0/0"},
             {"protocol": "17", "from_port": 53, "to_port": 53, "cidr": "::/0"}]
    labels = run_node(tmp_path, "done(RULES.map(app.ruleLabel));", RULES=rules)
    assert labels == ["tcp/22 from 203.0.113.7/32", "tcp/8000-8010 from 10.0.0.0/8",
                      "all from 0.0.0.0/0", "udp/53 from ::/0"]
