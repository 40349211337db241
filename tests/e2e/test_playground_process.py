"""`jit demo` as a person runs it: a process with no network but loopback, real-looking AWS
settings in its environment, a grant approved and revoked through the page's API, then
Ctrl-C. Every connection the process makes is recorded (Python's audit hook on
socket.connect): none may leave 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

# The demo, with every socket.connect (and name lookup) written to a file as it happens.
_WRAPPER = """\
import sys
log = open(sys.argv[1], "a", buffering=1)
def hook(event, args):
    if event == "socket.connect":
        log.write(repr(args[1]) + "\\n")
    elif event == "socket.getaddrinfo":
        log.write("lookup " + repr(args[0]) + "\\n")
sys.addaudithook(hook)
from jitcore.cli import main
sys.argv = ["jit", "demo", "--port", sys.argv[2]]
main()
"""

# What a developer's shell may hold: all of it must be ignored.
REAL_LOOKING_AWS = {
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AWS_SESSION_TOKEN": "FwoGZXIvYXdzEXAMPLE",
    "AWS_PROFILE": "production",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_ENDPOINT_URL": "https://ec2.eu-west-1.amazonaws.com",
    "AWS_ENDPOINT_URL_EC2": "https://ec2.eu-west-1.amazonaws.com",
    "HTTPS_PROXY": "http://proxy.example.com:3128",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_demo_runs_offline_touches_no_cloud_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    connections = tmp_path / "connections.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SLACK_", "JIT_"))}
    env.update(REAL_LOOKING_AWS, PYTHONUNBUFFERED="1")
    # A network namespace of its own: loopback only, as on a laptop with no network.
    command = ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
               sys.executable, "-c", _WRAPPER, str(connections), str(port)]
    demo = subprocess.Popen(command, cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert demo.stdout is not None
    before: list[str] = []  # what it printed up to its URL
    try:
        first = demo.stdout.readline()
        before.append(first)
        while first and "jit playground:" not in first:
            first = demo.stdout.readline()
            before.append(first)
        assert f"http://127.0.0.1:{port}" in first, "".join(before)
        # The page is in the demo's namespace: reach its API from inside it.
        url = f"http://127.0.0.1:{port}"
        results = _drive_inside(demo.pid, url, tmp_path)
        assert results["opened"] == {"protocol": "tcp", "from_port": 22, "to_port": 22,
                                     "cidr": "203.0.113.7/32"}
        assert results["after_revoke"] == []
    finally:
        demo.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            output, _ = demo.communicate(timeout=40)
            output = "".join(before) + output
        except subprocess.TimeoutExpired:
            demo.kill()
            output, _ = demo.communicate()
            output = "".join(before) + output
            raise AssertionError(f"jit demo did not stop on Ctrl-C:\n{output[-3000:]}") from None
    assert demo.returncode == 0, output[-3000:]
    assert "stopped; nothing is left running." in output
    assert "Traceback" not in output, output[-3000:]
    assert "WARNING" not in output, output[-3000:]  # a first run has nothing to warn about

    seen = connections.read_text().splitlines()
    assert seen, "the hook recorded nothing: the test would prove nothing"
    outside = [line for line in seen if not _loopback(line)]
    assert outside == [], f"connections that left 127.0.0.1: {outside}"


def _loopback(line: str) -> bool:
    if line.startswith("lookup "):
        host = line.removeprefix("lookup ").strip("'\"")
        return host in ("127.0.0.1", "localhost", "::1")
    return line.startswith(("('127.", "('::1'", "('localhost'"))


_DRIVER = """\
import json, sys, time, urllib.request
url = sys.argv[1]
def call(path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url + path, data=data,
                                     method="POST" if body is not None else "GET",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())
def wait(check, what):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = call("/api/state")
        found = check(state)
        if found:
            return found
        time.sleep(0.2)
    raise SystemExit("not seen: " + what + " " + json.dumps(state)[:2000])
def buttons(message):
    for block in message.get("blocks") or []:
        extra = [block["accessory"]] if "accessory" in block else []
        for element in block.get("elements", []) + extra:
            if element.get("type") == "button":
                yield block, element
assert call("/api/command", {"user": "U0REQUESTER",
                             "text": "ssh demo-vm 2m from 203.0.113.7 trying jit"})["ok"]
card = wait(lambda s: next((m for c in s["channels"] if c["id"] == "C0APPROVALS"
                            for m in c["messages"]), None), "the card")
block, approve = next((b, e) for b, e in buttons(card) if "approve" in e["action_id"])
assert call("/api/action", {"user": "U0APPROVER",
                            "container": {"type": "message", "channel": "C0APPROVALS",
                                          "ts": card["ts"]},
                            "action_id": approve["action_id"], "block_id": block.get("block_id"),
                            "value": approve.get("value")})["ok"]
rule = wait(lambda s: s["rules"][0] if s["rules"] else None, "the rule")
grant = approve.get("value")
assert call("/api/command", {"user": "U0REQUESTER", "text": "revoke " + str(grant)})["ok"]
wait(lambda s: s["rules"] == [] or None, "the rule removed")
print(json.dumps({"opened": {k: rule[k] for k in ("protocol", "from_port", "to_port", "cidr")},
                  "after_revoke": []}))
"""


def _drive_inside(pid: int, url: str, tmp_path: Path) -> Any:
    """Run the driver in the demo's network namespace (nsenter), return what it printed."""
    done = subprocess.run(["nsenter", "-t", str(pid), "-n", sys.executable, "-c", _DRIVER, url],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])
