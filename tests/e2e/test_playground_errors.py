"""`jit demo` refusing to start: one line on stderr, never a traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path


def test_a_taken_port_or_a_bad_policy_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "jitcore", "demo", "--port", str(port)],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "choose another port" in done.stderr and "Traceback" not in done.stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text("targets:\n  db:\n    aws: {region: us-east-1, security_group_id: sg-1}\n"
                   "    ports: {ssh: 99999}\n")
    done = subprocess.run([sys.executable, "-m", "jitcore", "demo", "--policy", str(bad)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert "99999 is out of range" in done.stderr
