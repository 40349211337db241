"""Ending a child process the way a person or an orchestrator would."""

from __future__ import annotations

import subprocess
from typing import Any


def stop(proc: subprocess.Popen[Any], signal_number: int, timeout: float) -> None:
    """Send `signal_number` (Ctrl-C, SIGTERM) and wait up to `timeout` s for the process to
    end, then kill it: the test's own assertions say whether it stopped as it should."""
    proc.send_signal(signal_number)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
