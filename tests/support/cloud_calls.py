"""Which cloud operations jit calls, recorded for the tests that ask: a pytest plugin.

Registered by tests/conftest.py (`pytest_plugins`). Nothing is patched unless a test asks for
the `cloud_calls` fixture, directly or through a cloud fake that records (`aws_env` in
tests/conftest.py, `arm_emulator` in tests/support/azure.py): for that test only, botocore and
azure-core are wrapped and every ArmEmulator is listened to; the record itself lasts the
session, so a test that runs last sees what every recorded test before it called.

AWS: every botocore API call, where all of them pass (`BaseClient._make_api_call`, wrapped and
called through), as the IAM action it needs, e.g. "ec2:AuthorizeSecurityGroupIngress".
Azure: every request any ArmEmulator answers, as the ARM action the emulator maps it to
(`Call.operation`), e.g. "Microsoft.Network/networkSecurityGroups/securityRules/write". The
polls of an asynchronous write are requests too, under the emulator's
/providers/Microsoft.Network/locations/{location}/operations/{id} and .../operationResults/{id}
URLs (ARM's); ARM authorizes them as Microsoft.Network/locations/operations/read and
.../locations/operationResults/read, which is what the emulator records.

Tests call the clouds themselves, to seed and to check, and jit's role needs none of that: each
call is credited to jitcore only when the innermost project frame on the caller's stack (code
outside the standard library and site-packages, this module aside) is in the jitcore package.
An Azure request is credited on the client side, in azure-core's transport, and matched to the
emulator's record by its `x-ms-client-request-id`; the polls of an operation run in
azure-core's own thread, so they are jitcore's when the poller was made from jitcore's code.

`@runs_last` moves a test to the end of the session (this plugin's
`pytest_collection_modifyitems`), so that it sees every call the other tests made.
Subprocesses (tests/e2e) are not recorded.
"""

from __future__ import annotations

import functools
import os
import sys
import sysconfig
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from types import FrameType
from typing import Any, TypeVar

import pytest
from azure.core.pipeline.transport import RequestsTransport
from azure.core.polling import LROPoller
from botocore.client import BaseClient

import jitcore
from tests.fakes.arm import ArmEmulator, Call

F = TypeVar("F", bound=Callable[..., Any])

_REQUEST_ID = "x-ms-client-request-id"
_RUNS_LAST = "_runs_last_in_session"
_JITCORE = os.path.dirname(jitcore.__file__) + os.sep
_LIBRARIES = tuple(sorted({sysconfig.get_paths()[key] + os.sep
                           for key in ("stdlib", "platstdlib", "purelib", "platlib")}))
_POLLER_THREAD = LROPoller._start.__code__  # azure-core polls in a thread running this


@dataclass(frozen=True)
class CloudCall:
    """One operation asked of a cloud, named as the permission it needs."""

    cloud: str  # "aws" or "azure"
    action: str  # "ec2:DescribeInstances", "Microsoft.Network/networkSecurityGroups/read"
    by_jitcore: bool
    test: str  # the test that was running, e.g. "tests/integration/test_cli.py::test_scan"


@functools.cache
def _origin(filename: str) -> str:
    """Whose code `filename` holds: "jitcore", "project" (tests, bot...) or "library"."""
    if filename.startswith("<") or filename == __file__:
        return "library"
    if filename.startswith(_JITCORE):
        return "jitcore"
    return "library" if filename.startswith(_LIBRARIES) else "project"


def _current_test() -> str:
    return os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]


class CloudCallRecorder:
    """Records the cloud calls of this process while installed (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._aws: list[CloudCall] = []
        self._arm: list[tuple[str | None, str, str]] = []  # request id, action, test
        self._by_jitcore: dict[str, bool] = {}  # Azure request id -> sent by jitcore
        self._pollers: weakref.WeakSet[LROPoller[Any]] = weakref.WeakSet()
        self._undo: list[Callable[[], None]] = []

    # ---- reading ---------------------------------------------------------------------------

    def mark(self) -> tuple[int, int]:
        """Where the record stands now: pass it to `calls` for what happens after."""
        with self._lock:
            return len(self._aws), len(self._arm)

    def calls(self, since: tuple[int, int] = (0, 0)) -> list[CloudCall]:
        """The calls recorded (since a `mark`), AWS first, each in the order made."""
        with self._lock:
            aws = self._aws[since[0]:]
            azure = [CloudCall("azure", action, self._by_jitcore.get(request_id or "", False),
                               test) for request_id, action, test in self._arm[since[1]:]]
        return aws + azure

    def jitcore_actions(self, cloud: str, since: tuple[int, int] = (0, 0)) -> dict[str, str]:
        """Each action jitcore called on `cloud` (since a `mark`), with the first test that
        saw it."""
        found: dict[str, str] = {}
        for call in self.calls(since):
            if call.cloud == cloud and call.by_jitcore:
                found.setdefault(call.action, call.test)
        return found

    # ---- installing ------------------------------------------------------------------------

    def install(self) -> None:
        """Wrap botocore's and azure-core's methods (each calls the original) and listen to
        every ArmEmulator, until `uninstall`."""
        if self._undo:
            raise RuntimeError("the cloud-call recorder is installed already")
        recorder = self
        # Every botocore client method (and paginator page) goes through this one.
        make_api_call = BaseClient._make_api_call  # type: ignore[attr-defined]
        send = RequestsTransport.send
        poller_init = LROPoller.__init__

        @functools.wraps(make_api_call)
        def recorded_api_call(client: BaseClient, operation_name: str,
                              api_params: dict[str, Any]) -> Any:
            service = client.meta.service_model.service_name
            recorder._aws_call(f"{service}:{operation_name}")
            return make_api_call(client, operation_name, api_params)

        @functools.wraps(send)
        def recorded_send(transport: RequestsTransport, request: Any, **kwargs: Any) -> Any:
            request_id = request.headers.get(_REQUEST_ID)
            if request_id:
                recorder._azure_request(str(request_id))
            return send(transport, request, **kwargs)

        @functools.wraps(poller_init)
        def recorded_poller_init(poller: LROPoller[Any], *args: Any, **kwargs: Any) -> None:
            if recorder._from_jitcore():  # before __init__, which starts the polling thread
                with recorder._lock:
                    recorder._pollers.add(poller)
            poller_init(poller, *args, **kwargs)

        for owner, name, original, wrapper in (
                (BaseClient, "_make_api_call", make_api_call, recorded_api_call),
                (RequestsTransport, "send", send, recorded_send),
                (LROPoller, "__init__", poller_init, recorded_poller_init)):
            setattr(owner, name, wrapper)
            self._undo.append(functools.partial(setattr, owner, name, original))
        ArmEmulator.observers.append(self._arm_call)
        self._undo.append(functools.partial(ArmEmulator.observers.remove, self._arm_call))

    def uninstall(self) -> None:
        while self._undo:
            self._undo.pop()()

    # ---- recording -------------------------------------------------------------------------

    def _aws_call(self, action: str) -> None:
        call = CloudCall("aws", action, self._from_jitcore(), _current_test())
        with self._lock:
            self._aws.append(call)

    def _azure_request(self, request_id: str) -> None:
        by_jitcore = self._from_jitcore()
        with self._lock:  # a retry resends the same id, from the same caller
            self._by_jitcore[request_id] = by_jitcore

    def _arm_call(self, call: Call, headers: Message) -> None:
        action = call.operation or f"(no ARM action for {call.method} {call.path})"
        with self._lock:
            self._arm.append((headers.get(_REQUEST_ID), action, _current_test()))

    def _from_jitcore(self) -> bool:
        """Is the innermost project code on this thread's stack jitcore's?"""
        frame: FrameType | None = sys._getframe(1)
        while frame is not None:
            if frame.f_code is _POLLER_THREAD:
                poller = frame.f_locals.get("self")
                with self._lock:
                    return poller in self._pollers
            origin = _origin(frame.f_code.co_filename)
            if origin != "library":
                return origin == "jitcore"
            frame = frame.f_back
        return False


@pytest.fixture(scope="session")
def cloud_call_record() -> CloudCallRecorder:
    """The session's record of cloud calls; it records only while `cloud_calls` is in use."""
    return CloudCallRecorder()


@pytest.fixture
def cloud_calls(cloud_call_record: CloudCallRecorder) -> Iterator[CloudCallRecorder]:
    """Record this test's cloud calls into the session's record, which it yields."""
    cloud_call_record.install()
    try:
        yield cloud_call_record
    finally:
        cloud_call_record.uninstall()


def runs_last(test: F) -> F:
    """Run this test after every other test of the session."""
    setattr(test, _RUNS_LAST, True)
    return test


@pytest.hookimpl(trylast=True)  # after any plugin that reorders
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Move `@runs_last` tests to the end, keeping every other test's order."""
    items.sort(key=lambda item: bool(getattr(getattr(item, "function", None), _RUNS_LAST,
                                             False)))
