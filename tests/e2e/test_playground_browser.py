"""`jit demo` in a real browser: Debian's Chromium, headless, driven by Playwright, clicking
and typing on the page as a first-time user would. Every step is checked from what the
page shows, and a screenshot of each is written to the folder the test prints.

Playwright drives the system's Chromium (`executable_path`) and needs no browser of its
own (`.ci/run` installs it with PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1, and never runs
`playwright install`). `bash .ci/run` installs Chromium when the machine lacks it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import BrowserContext, Locator, Page, expect, sync_playwright

from tests.support.processes import stop

CHROMIUM = Path("/usr/bin/chromium")
# No network but loopback: Chromium's own background traffic (updates, sync, field trials)
# would only be refused here.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-proxy-server"]
REQUESTER, APPROVER, SOC = "U0REQUESTER", "U0APPROVER", "U0SOC"
APPROVALS, AUDIT = "C0APPROVALS", "C0AUDIT"
RULE = "tcp/22 from 203.0.113.7/32"
SEEN_WITHIN_MS = 20_000  # the page polls every 0.7 s; jit delivers through its outbox
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_demo(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    """`jit demo --port <free>` as a process, its output in a file (a pipe nobody reads
    could fill and stall it); yields the page's URL. Stops it with Ctrl-C (SIGINT)."""
    port = free_port()
    output = tmp_path / "demo-output.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SLACK_", "JIT_"))}
    env["PYTHONUNBUFFERED"] = "1"
    with output.open("w") as sink:
        demo = subprocess.Popen(
            [sys.executable, "-c", "from jitcore.cli import main; main()", "demo",
             "--port", str(port)], cwd=tmp_path, env=env, text=True, stdout=sink,
            stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while f"jit playground: {url}" not in output.read_text():
            assert demo.poll() is None, f"jit demo exited early:\n{output.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"jit demo did not start:\n{output.read_text()}"
            time.sleep(0.1)
        yield url, demo, output
    finally:
        if demo.poll() is None:
            stop(demo, signal.SIGINT, timeout=40)


@contextmanager
def chromium(tmp_path: Path) -> Iterator[BrowserContext]:
    """Debian's Chromium, headless, with a fresh profile."""
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: this test drives Debian's Chromium. `bash .ci/run` installs "
        "it (apt-get install --no-install-recommends chromium)")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 860}, locale="en-GB",
            timezone_id="UTC")
        try:
            yield context
        finally:
            context.close()


class Steps:
    """The page, and a numbered screenshot of each step in `folder`."""

    def __init__(self, page: Page, folder: Path) -> None:
        self.page, self.folder = page, folder
        self.shots: list[Path] = []
        folder.mkdir(parents=True, exist_ok=True)

    def shot(self, name: str) -> None:
        path = self.folder / f"{len(self.shots) + 1:02d}-{name}.png"
        self.page.screenshot(path=str(path))
        self.shots.append(path)

    def be(self, person: str) -> None:
        self.page.get_by_test_id(f"person-{person}").click()
        expect(self.page.get_by_test_id(f"person-{person}")).to_have_attribute(
            "aria-pressed", "true")

    def open_channel(self, channel: str) -> None:
        self.page.get_by_test_id(f"channel-{channel}").click()
        expect(self.page.get_by_test_id(f"channel-{channel}")).to_have_attribute(
            "aria-current", "page")

    def open_dms(self) -> None:
        self.page.get_by_test_id("dms").click()
        expect(self.page.get_by_test_id("dms")).to_have_attribute("aria-current", "page")

    def type_command(self, text: str) -> None:
        self.page.get_by_test_id("composer").fill(text)
        self.page.get_by_test_id("send").click()

    def messages(self, channel: str, text: str | re.Pattern[str]) -> Locator:
        """Top-level messages of a conversation that contain `text`."""
        return self.page.locator(
            f'[data-testid="message"][data-channel="{channel}"]:not([data-reply])'
        ).filter(has_text=text)

    def dm(self, text: str | re.Pattern[str]) -> Locator:
        """The person's messages from jit shown in their DMs (a DM channel id is theirs)."""
        return self.page.get_by_test_id("timeline").locator(
            '[data-testid="message"]').filter(has_text=text)

    def rule(self) -> Locator:
        return self.page.get_by_test_id("rules").locator(
            f'[data-testid="rule"][data-rule="{RULE}"]')


def seen(locator: Locator) -> None:
    expect(locator).to_be_visible(timeout=SEEN_WITHIN_MS)


def test_request_approve_open_revoke_and_the_modal_in_a_real_browser(tmp_path: Path) -> None:
    folder = tmp_path / "screenshots"
    print(f"screenshots: {folder}")
    problems: list[str] = []
    with running_demo(tmp_path) as (url, demo, output), chromium(tmp_path) as context:
        page = context.new_page()
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on("console", lambda m: problems.append(f"console: {m.text}")
                if m.type == "error" else None)
        page.goto(f"{url}/?as={REQUESTER}")
        steps = Steps(page, folder)
        expect(page.get_by_test_id("banner")).to_contain_text("not connected to Slack")
        expect(page.get_by_test_id("rules")).to_contain_text("No inbound rules",
                                                             timeout=SEEN_WITHIN_MS)

        grant = request_and_refuse_self_approval(steps)
        approve_and_see_it_open(steps, grant)
        revoke(steps, grant)
        audit_thread_in_order(steps, grant)
        request_through_the_modal(steps)

        assert demo.poll() is None, f"jit demo died:\n{output.read_text()[-3000:]}"
        assert problems == [], problems

    assert demo.returncode == 0, output.read_text()[-3000:]
    log = output.read_text()
    assert "stopped; nothing is left running." in log
    assert "Traceback" not in log, log[-3000:]
    assert [p.name for p in steps.shots] == sorted(p.name for p in folder.glob("*.png"))
    for shot in steps.shots:
        data = shot.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, shot


def request_and_refuse_self_approval(steps: Steps) -> str:
    """Riley types the request; the card appears; Riley's own Approve is refused."""
    page = steps.page
    steps.type_command("/jit ssh demo-vm 2m from 203.0.113.7 trying jit")
    ack = page.get_by_test_id("ephemeral").filter(has_text="is waiting for an approver")
    seen(ack)
    found = re.search(r"Request #(\d+): ssh tcp/22 on demo-vm from 203\.0\.113\.7/32 for 2m",
                      ack.inner_text())
    assert found, ack.inner_text()
    grant = found.group(1)
    expect(page.get_by_test_id("sent-command")).to_contain_text(
        "/jit ssh demo-vm 2m from 203.0.113.7 trying jit")
    steps.shot("request-typed")

    steps.open_channel(APPROVALS)
    card = steps.messages(APPROVALS, f"jit #{grant}")
    seen(card)
    for words in ("request from @Riley", "demo-vm", "ssh tcp/22", "203.0.113.7/32", "2m",
                  "trying jit", "Approve adds: Allow tcp/22 from 203.0.113.7/32"):
        expect(card).to_contain_text(words)
    steps.shot("card-in-approvals")

    card.get_by_test_id("button-jit_approve").click()
    refusal = page.get_by_test_id("ephemeral").filter(has_text="cannot approve your own request")
    seen(refusal)
    expect(refusal).to_contain_text("Only visible to you")
    expect(card.get_by_test_id("button-jit_approve")).to_be_visible()  # still pending
    expect(steps.rule()).to_have_count(0)
    steps.shot("requester-approve-refused")
    return grant


def approve_and_see_it_open(steps: Steps, grant: str) -> None:
    """Avery approves; the rule shows in the security group; Riley's DM says it is open."""
    page = steps.page
    steps.be(APPROVER)
    expect(page.get_by_test_id("ephemeral")).to_have_count(0)  # Riley's refusal is Riley's
    card = steps.messages(APPROVALS, f"jit #{grant}")
    card.get_by_test_id("button-jit_approve").click()
    expect(card).to_contain_text(re.compile(r"Decided by @Avery at \d\d:\d\d UTC: open until"),
                                 timeout=SEEN_WITHIN_MS)
    expect(card.get_by_test_id("button-jit_approve")).to_have_count(0)
    seen(steps.rule())
    expect(steps.rule()).to_contain_text(f"jit grant #{grant}")
    steps.shot("approver-approved-rule-open")

    steps.be(REQUESTER)
    steps.open_dms()
    seen(steps.dm(f"Request #{grant} (ssh tcp/22 on demo-vm from 203.0.113.7/32) was "
                  "approved by @Avery"))
    opened = steps.dm(f"#{grant} is open")
    seen(opened)
    expect(opened).to_contain_text(re.compile(
        rf"#{grant} is open: ssh tcp/22 on demo-vm from 203\.0\.113\.7/32 until \d\d:\d\d UTC"))
    expect(opened).to_contain_text(f"/jit revoke {grant}")
    steps.shot("requester-dm-open")


def revoke(steps: Steps, grant: str) -> None:
    """Riley revokes it: the rule leaves the panel, and the DM says it is closed."""
    steps.type_command(f"/jit revoke {grant}")
    expect(steps.rule()).to_have_count(0, timeout=SEEN_WITHIN_MS)
    expect(steps.page.get_by_test_id("rules")).to_contain_text(
        "No inbound rules: every port is closed.", timeout=SEEN_WITHIN_MS)
    seen(steps.dm(f"#{grant} is closed (revoked by you)"))
    steps.shot("revoked-rule-gone")


def audit_thread_in_order(steps: Steps, grant: str) -> None:
    """Sam, the SOC analyst, reads the audit channel: the request, and a thread with every
    event after it, in the order they happened."""
    page = steps.page
    steps.be(SOC)
    steps.open_channel(AUDIT)
    parent = steps.messages(AUDIT, f"jit #{grant} requested")
    seen(parent)
    expect(parent.first).to_contain_text(
        f"jit #{grant} requested ssh demo-vm 203.0.113.7/32 for 2m by @Riley: trying jit")
    replies = parent.get_by_test_id("thread-replies").locator('[data-reply="true"]')
    expect(replies).to_have_count(5, timeout=SEEN_WITHIN_MS)
    expect(parent.get_by_test_id("thread-toggle")).to_have_text("5 replies")
    lines = [" ".join(text.split()) for text in replies.all_inner_texts()]
    expected = [
        rf"jit #{grant} approved ssh demo-vm 203\.0\.113\.7/32 for 2m by @Avery$",
        rf"jit #{grant} opening ssh demo-vm 203\.0\.113\.7/32 by jit$",
        rf"jit #{grant} opened ssh demo-vm 203\.0\.113\.7/32 until \d\d:\d\dZ rule sgr-\w+ "
        r"by jit$",
        rf"jit #{grant} closing ssh demo-vm 203\.0\.113\.7/32 \(revoked\) by @Riley$",
        rf"jit #{grant} closed ssh demo-vm 203\.0\.113\.7/32 \(revoked\) by @Riley: removed; "
        r"established sessions are not cut by the firewall$",
    ]
    assert len(lines) == len(expected), lines
    for line, pattern in zip(lines, expected, strict=True):
        assert re.search(pattern, line), (pattern, lines)
    page.get_by_test_id("thread-replies").first.scroll_into_view_if_needed()
    steps.shot("audit-thread")


def request_through_the_modal(steps: Steps) -> None:
    """`/jit ssh` with the rest left out opens the request form; a required field left empty
    is marked; filled in and submitted, it becomes a card in the approvals channel."""
    page = steps.page
    steps.be(REQUESTER)
    steps.open_dms()
    steps.type_command("/jit ssh")
    modal = page.get_by_test_id("modal")
    seen(modal)
    expect(modal).to_contain_text("Request access")
    service = modal.get_by_test_id("input-service")
    expect(service.locator("option:checked")).to_have_text("ssh")
    # The only target there is comes chosen.
    target = modal.get_by_test_id("input-target")
    expect(target.locator("option:checked")).to_have_text("demo-vm")
    steps.shot("modal-open")

    modal.get_by_test_id("input-duration").fill("3m")
    modal.get_by_test_id("input-source").fill("198.51.100.20")
    modal.get_by_test_id("input-reason").fill("checking the modal")
    modal.get_by_test_id("input-target").select_option(value="")
    modal.get_by_test_id("modal-submit").click()
    expect(modal.get_by_test_id("error-target")).to_have_text(
        "Please complete this required field.")
    steps.shot("modal-target-missing")

    modal.get_by_test_id("input-target").select_option(label="demo-vm")
    modal.get_by_test_id("modal-submit").click()
    expect(modal).to_have_count(0, timeout=SEEN_WITHIN_MS)
    steps.open_channel(APPROVALS)
    card = steps.messages(APPROVALS, "checking the modal")
    seen(card)
    for words in ("request from @Riley", "ssh tcp/22", "198.51.100.20/32", "3m"):
        expect(card).to_contain_text(words)
    expect(card.get_by_test_id("button-jit_approve")).to_be_visible()
    steps.shot("modal-request-card")
