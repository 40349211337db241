"""The example policies pass `jit check`, and the README and the manuals hold together:
every relative link leads to a file (and a heading) that exists, the README stays short
and names the test command CI runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from jitcore.cli import cli

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
README = ROOT / "README.md"
MANUALS = sorted((ROOT / "docs").glob("*.md"))
DOCUMENTS = [README, *MANUALS]
README_MAX_LINES = 200

_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def jit_check(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["check", "--config", str(path)])
    return result.exit_code, result.output


def test_there_are_examples() -> None:
    assert ROOT / "examples" / "jit.yaml" in EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_passes_jit_check(path: Path) -> None:
    code, output = jit_check(path)
    assert code == 0, output
    targets = yaml.safe_load(path.read_text(encoding="utf-8"))["targets"]
    assert f"{path}: ok, {len(targets)} target(s)" in output
    for name in targets:
        assert f"\n{name}  [" in output, f"{name} is missing from jit check's listing"


def test_jit_yaml_shows_both_clouds_approvals_and_auto_approval() -> None:
    code, output = jit_check(ROOT / "examples" / "jit.yaml")
    assert code == 0, output
    assert "slack: approvals C" in output
    assert "[aws " in output and "[azure " in output
    assert "auto-approve: " in output
    assert "role: arn:aws:iam::" in output


def test_jit_check_refuses_a_broken_example(tmp_path: Path) -> None:
    """The check above can fail: the same file with one bad duration is refused."""
    text = (ROOT / "examples" / "jit.yaml").read_text(encoding="utf-8")
    broken = tmp_path / "jit.yaml"
    broken.write_text(text.replace("max_duration: 1h", "max_duration: 25h", 1), encoding="utf-8")
    code, output = jit_check(broken)
    assert code == 1
    assert "25h is longer than the 24h limit" in output


def _prose(path: Path) -> str:
    """The text outside code blocks and code spans, where links live."""
    return _CODE_SPAN.sub("", _FENCE.sub("", path.read_text(encoding="utf-8")))


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = _CODE_SPAN.sub(lambda m: m.group()[1:-1], heading).strip().lower()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = _FENCE.sub("", path.read_text(encoding="utf-8"))
    return {_anchor(h) for h in _HEADING.findall(text)}


def _relative_links(path: Path) -> list[str]:
    return [link for link in _LINK.findall(_prose(path))
            if not re.match(r"[a-z][a-z0-9+.-]*:", link)]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_lead_somewhere(document: Path) -> None:
    broken = []
    for link in _relative_links(document):
        file_part, _, fragment = link.partition("#")
        target = (document.parent / file_part).resolve() if file_part else document
        if not target.exists():
            broken.append(f"{link}: no file {target.relative_to(ROOT)}")
        elif fragment and target.suffix == ".md" and fragment not in _anchors(target):
            broken.append(f"{link}: no heading #{fragment} in {target.relative_to(ROOT)}")
    assert not broken, f"{document.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_link_check_sees_links() -> None:
    links = _relative_links(README)
    assert "docs/policy.md" in links, f"found only {links}: has the README lost its links?"
    assert _anchor("Two or more replicas") == "two-or-more-replicas"
    assert _anchor("`jit enable`: closed by default") == "jit-enable-closed-by-default"


def test_every_manual_is_linked_from_the_readme() -> None:
    linked = {link.partition("#")[0] for link in _relative_links(README)}
    missing = [m.relative_to(ROOT).as_posix() for m in MANUALS
               if m.relative_to(ROOT).as_posix() not in linked]
    assert not missing, f"README.md links none of {missing}"


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; keep it to "\
        f"{README_MAX_LINES} and move the rest to docs/"


def test_readme_test_command_is_the_one_ci_runs() -> None:
    command = ".venv/bin/python -m pytest"
    assert command in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert command in README.read_text(encoding="utf-8")
