"""Who waits for whom inside jit-bot: work after the ack, and the Slack sender yielding to
acks."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from bot.app import AfterAck, Foreground
from bot.delivery import Delivery, delivery_client
from jitcore.ports import SystemClock
from jitcore.service import JitService
from jitcore.store import Store
from tests.fakes.slack_api import SlackApiFake
from tests.support.policies import aws_policy

BOT_TOKEN = "xoxb-test"


def test_after_ack_returns_at_once_and_runs_the_work() -> None:
    later = AfterAck(workers=2)
    release, ran = threading.Event(), threading.Event()

    def slow() -> None:
        release.wait(5)
        ran.set()

    started = time.perf_counter()
    later(slow)
    assert time.perf_counter() - started < 0.1  # the caller (the ack) does not wait
    assert not ran.is_set()
    release.set()
    assert ran.wait(5)
    later.close()


def test_after_ack_runs_a_burst_of_approvals_opens_together() -> None:
    """A hundred opens waiting on their cloud writes at once: all of them waiting together is
    what lets them share one write per firewall."""
    later = AfterAck()
    waiting = threading.Barrier(101)
    for _ in range(100):
        later(lambda: waiting.wait(5))
    waiting.wait(5)  # raises BrokenBarrierError unless all 100 run at the same time
    later.close()


def test_after_ack_survives_a_failing_job(caplog: pytest.LogCaptureFixture) -> None:
    later = AfterAck(workers=1)
    done = threading.Event()
    later(lambda: 1 / 0)
    later(done.set)  # the same single worker goes on with the next job
    assert done.wait(5)
    later.close()
    assert "work after an ack failed" in caplog.text


def test_foreground_is_quiet_only_when_no_request_is_answered() -> None:
    foreground = Foreground(settle=0.05)
    assert foreground.wait_quiet(0)
    with foreground:
        with foreground:
            assert not foreground.wait_quiet(0.05)
        assert not foreground.wait_quiet(0.05)  # one of two still in flight
    assert not foreground.wait_quiet(0)  # the last one just ended: not settled yet
    started = time.perf_counter()
    assert foreground.wait_quiet(1)
    assert 0.04 <= time.perf_counter() - started < 0.5


def test_foreground_wakes_a_waiter_when_the_last_request_ends() -> None:
    foreground = Foreground()
    woke: list[float] = []
    foreground.__enter__()
    waiter = threading.Thread(target=lambda: woke.append(
        foreground.wait_quiet(5) and time.perf_counter()))
    waiter.start()
    time.sleep(0.1)
    ended = time.perf_counter()
    foreground.__exit__(None, None, None)
    waiter.join(5)
    assert woke and woke[0] - ended < 0.5


@pytest.fixture
def slack() -> Iterator[SlackApiFake]:
    with SlackApiFake(bot_token=BOT_TOKEN) as fake:
        yield fake


@contextmanager
def yielding_sender(slack: SlackApiFake, store: Store, foreground: Foreground,
                    yield_at_most: float) -> Iterator[JitService]:
    """jit's service writing alerts to the outbox, and a sender posting them to the fake,
    yielding to `foreground`."""
    policy = aws_policy("sg-0123456789abcdef0")
    delivery = Delivery(delivery_client(BOT_TOKEN, slack.api_url), policy, store,
                        foreground=foreground, yield_at_most=yield_at_most, poll=0.05)
    delivery.start()
    try:
        yield JitService(store, policy, {}, delivery, SystemClock())
    finally:
        delivery.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sender_lets_an_ack_in_flight_go_first(slack: SlackApiFake, store: Store) -> None:
    foreground = Foreground()
    with yielding_sender(slack, store, foreground, yield_at_most=5.0) as service:
        with foreground:  # a request is being answered
            service.alert("first")
            time.sleep(0.3)
            assert slack.messages("C0AUDIT") == []  # held back while the ack is in flight
        slack.wait_for("chat.postMessage", timeout=5)
        assert [m["text"] for m in slack.messages("C0AUDIT")] == [":rotating_light: first"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sender_yields_for_a_bounded_time_only(slack: SlackApiFake, store: Store) -> None:
    foreground = Foreground()
    with yielding_sender(slack, store, foreground, yield_at_most=0.2) as service, foreground:
        # requests never stop arriving: the sender still gets through
        service.alert("one")
        service.alert("two")
        slack.wait_for("chat.postMessage", count=2, timeout=5)
        assert [m["text"] for m in slack.messages("C0AUDIT")] == [
            ":rotating_light: one", ":rotating_light: two"]
