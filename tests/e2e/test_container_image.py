"""The container image, checked without a container engine: the Dockerfile is parsed and its
steps are done for real, so the file cannot drift from what actually builds and runs.

Each stage's filesystem is a directory of its own: the absolute paths the image owns (/src,
/wheels, /etc/jit, /var/lib/jit, ...) are moved under it, while /usr, /bin and the other
system directories are the host's, the way they come from the base image. Then:

1. build stage: the files its COPY lines name are copied from the build context (what
   .dockerignore leaves of it), and its RUN lines run with `sh -c`, as written, in its WORKDIR:
   `pip wheel --no-deps` of the project, then a wheel of every dependency. This pip uses the
   package index settings of the machine running the test, as the image build uses PyPI.
2. final stage: a fresh `python -m venv` stands in for the base image's Python. Its RUN line
   that calls pip runs as written, with the build stage's wheels mounted where its
   `--mount=type=bind,from=...` says, pip's configuration files and PIP_* variables cleared and
   only that venv on PATH: `--no-index --find-links` must find the project and all of its
   dependencies in the wheel directory alone, so nothing is built (no compiler) and nothing
   fetched. The mount is gone again before anything runs.
3. the ENTRYPOINT, found on the final stage's PATH, runs from its WORKDIR with the final stage's
   ENV defaults, changed only where a deployment would: Slack tokens and the Slack API URL (the
   Slack fake), a free port, AWS settings (moto); the policy goes where JIT_CONFIG points and
   the SQLite database where JIT_DATABASE_URL points. The HEALTHCHECK command, as written, runs
   with that Python and must pass; SIGTERM must stop jit-bot with exit status 0; then the same
   HEALTHCHECK must fail, nothing listening any more.
4. the release step written in the Dockerfile's comments (`--entrypoint jit IMAGE db upgrade`)
   runs with the installed `jit`.

Only a real build can check the rest: the base image, the RUN that creates the user and the
data directory (it needs root; checked here by reading it only), file ownership and
permissions under uid 10001, and BuildKit's own handling of the bind mount.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from tests.e2e.test_slack_bot import BOT_TOKEN, SECRET, free_port, wait_until
from tests.fakes.slack_api import SlackApiFake
from tests.support.policies import aws_policy_data

CONTEXT = Path(__file__).resolve().parents[2]  # the build context: the project's root
DOCKERFILE = CONTEXT / "Dockerfile"
# Directories that come with the base image: paths under them are the host's own.
SYSTEM_DIRS = frozenset({"bin", "dev", "lib", "lib32", "lib64", "proc", "sbin", "sys", "usr"})
BUILD_TOOLS = ("gcc", "g++", "clang", "build-essential", "python3-dev", "libpq-dev")
STEP_TIMEOUT = 300


# ---- reading the Dockerfile ------------------------------------------------------------------

@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    flags: tuple[tuple[str, str], ...]  # the --name=value options before the arguments
    args: str  # the rest, continuation lines joined

    def flag(self, name: str) -> str | None:
        return next((value for key, value in self.flags if key == name), None)

    def exec_form(self) -> list[str]:
        argv = json.loads(self.args)
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), self.args
        return argv


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


@dataclass(frozen=True)
class Dockerfile:
    stages: list[Stage]
    comments: list[str]
    text: str

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        found = [s for s in self.stages if s.name == name]
        assert found, f"the Dockerfile has no stage named {name!r}"
        return found[0]


_FLAGS = re.compile(r"((?:--[\w-]+(?:=\S*)?\s+)*)(.*)", re.DOTALL)


def parse_dockerfile(text: str) -> Dockerfile:
    stages: list[Stage] = []
    comments: list[str] = []
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):  # a comment, also inside a continued instruction
            comments.append(line.lstrip()[1:].strip())
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        pending += line
        if pending.strip():
            logical.append(pending.strip())
        pending = ""
    assert not pending.strip(), "the Dockerfile ends inside a continued line"
    for statement in logical:
        keyword, _, rest = statement.partition(" ")
        match = _FLAGS.match(rest.strip())
        assert match is not None
        flags = tuple((name.lstrip("-"), value) for name, _, value in
                      (f.partition("=") for f in match.group(1).split()))
        instruction = Instruction(keyword.upper(), flags, match.group(2).strip())
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        else:
            assert stages, f"{statement!r} comes before any FROM"
            stages[-1].instructions.append(instruction)
    assert stages, "the Dockerfile has no FROM"
    return Dockerfile(stages, comments, text)


def parse_env(args: str) -> dict[str, str]:
    words = shlex.split(args)
    if words and "=" not in words[0]:  # the old `ENV NAME value` form
        return {words[0]: " ".join(words[1:])}
    return dict(word.split("=", 1) for word in words)


def expand(value: str, env: dict[str, str]) -> str:
    """Docker's variable substitution in ENV/WORKDIR values: $NAME, ${NAME}, ${NAME:-default}."""
    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        return env.get(name) or (match.group(2) or "")
    return re.sub(r"\$(?:\{(\w+)(?::-([^}]*))?\}|(\w+))", one, value)


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert match, f"cannot read the duration {duration!r}"
    return float(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match.group(2)]


# ---- .dockerignore ---------------------------------------------------------------------------

def _glob_regex(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 1:]:
            end = pattern.index("]", i + 1)
            out.append("[" + pattern[i + 1:end].replace("!", "^", 1) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def ignore_rules(context: Path) -> list[tuple[bool, re.Pattern[str]]]:
    path = context / ".dockerignore"
    rules = []
    for line in path.read_text().splitlines() if path.exists() else []:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip().strip("/"))
        rules.append((negate, _glob_regex(pattern)))
    return rules


def is_ignored(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path, or a directory above it, decides."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for negate, regex in rules:
        if any(regex.fullmatch(p) for p in prefixes):
            ignored = not negate
    return ignored


# ---- replaying the steps ---------------------------------------------------------------------

_PATH_TOKEN = re.compile(r"(?<![\w.~$-])(?<!:/)/[\w.*?@+-]+(?:/[\w.*?@+-]*)*")


def into_root(text: str, root: Path) -> str:
    """Every absolute path the image owns moved under `root`; system directories kept."""
    def one(match: re.Match[str]) -> str:
        path = match.group(0)
        return path if path.split("/")[1] in SYSTEM_DIRS else f"{root}{path}"
    return _PATH_TOKEN.sub(one, text)


def run_checked(argv: list[str], *, what: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=STEP_TIMEOUT,
                                check=False, **kwargs)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{what}: still running after {STEP_TIMEOUT}s: {argv}") from exc
    assert result.returncode == 0, (
        f"{what} failed (exit {result.returncode}): {argv}\n{result.stdout}\n{result.stderr}")
    return result


def copy_from_context(instruction: Instruction, root: Path, workdir: str,
                      rules: list[tuple[bool, re.Pattern[str]]]) -> None:
    """COPY src... dest from the build context, as much of it as .dockerignore leaves."""
    words = (instruction.exec_form() if instruction.args.startswith("[")
             else shlex.split(instruction.args))
    assert len(words) >= 2, f"COPY needs a source and a destination: {instruction.args!r}"
    *sources, dest = words
    target = Path(into_root(dest if dest.startswith("/") else f"{workdir}/{dest}", root))
    into_dir = dest.endswith("/") or len(sources) > 1
    for source in sources:
        matches = sorted(CONTEXT.glob(source))
        assert matches, f"COPY {source}: not in the build context"
        for match in matches:
            relative = match.relative_to(CONTEXT).as_posix()
            assert not is_ignored(relative, rules), (
                f"COPY {source}: .dockerignore leaves it out of the build context")
            files = ([match] if match.is_file() else
                     sorted(p for p in match.rglob("*") if p.is_file()))
            for file in files:
                inner = file.relative_to(CONTEXT).as_posix()
                if is_ignored(inner, rules):
                    continue
                if match.is_dir():
                    destination = target / file.relative_to(match)
                elif into_dir:
                    destination = target / file.name
                else:
                    destination = target
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, destination)


@dataclass
class Replay:
    """What replaying a stage left: its root, its ENV, its WORKDIR (moved under the root)."""

    root: Path
    env: dict[str, str]
    workdir: Path


def replay_stage(stage: Stage, root: Path, env: dict[str, str], *,
                 runs: re.Pattern[str], stages: dict[str, Replay]) -> Replay:
    """WORKDIR, ENV, COPY and the RUN lines matching `runs`, in the stage's order."""
    rules = ignore_rules(CONTEXT)
    env = dict(env)
    workdir = "/"
    for instruction in stage.instructions:
        if instruction.keyword == "WORKDIR":
            path = expand(instruction.args, env)
            workdir = path if path.startswith("/") else f"{workdir.rstrip('/')}/{path}"
            Path(into_root(workdir, root)).mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "ENV":
            for name, value in parse_env(instruction.args).items():
                env[name] = expand(into_root(value, root), env)
        elif instruction.keyword == "COPY":
            source_stage = instruction.flag("from")
            if source_stage is None:
                copy_from_context(instruction, root, workdir, rules)
            else:
                source, dest = shlex.split(instruction.args)
                target = Path(into_root(dest, root))
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copytree(into_root(source, stages[source_stage].root), target,
                                dirs_exist_ok=True)
        elif instruction.keyword == "RUN" and runs.search(instruction.args):
            mounts = []
            for key, value in instruction.flags:
                if key != "mount":
                    continue
                options = dict(o.partition("=")[::2] for o in value.split(","))
                assert options.get("type") == "bind" and "from" in options, (
                    f"the replay knows bind mounts from a stage only: --mount={value}")
                mount = Path(into_root(options["target"], root))
                mount.parent.mkdir(parents=True, exist_ok=True)
                mount.symlink_to(into_root(options.get("source", "/"),
                                           stages[options["from"]].root))
                mounts.append(mount)
            try:
                run_checked(["sh", "-c", into_root(instruction.args, root)],
                            what=f"RUN {instruction.args}", env=env,
                            cwd=into_root(workdir, root))
            finally:
                for mount in mounts:
                    mount.unlink()
    return Replay(root, env, Path(into_root(workdir, root)))


@dataclass
class Image:
    dockerfile: Dockerfile
    root: Path  # the final stage's filesystem
    env: dict[str, str]  # the final stage's environment (paths moved under root)
    workdir: Path
    venv_bin: Path  # where the base image's python, pip and console scripts are
    wheels: list[str]

    def which(self, program: str) -> Path:
        found = shutil.which(program, path=self.env["PATH"])
        assert found, f"{program} is not on the image's PATH ({self.env['PATH']})"
        assert Path(found).parent == self.venv_bin, (
            f"{program} resolves to {found}, not to the image's Python ({self.venv_bin})")
        return Path(found)


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def image(dockerfile: Dockerfile, tmp_path_factory: pytest.TempPathFactory) -> Image:
    base = tmp_path_factory.mktemp("image")
    done: dict[str, Replay] = {}

    # The build stages, with this machine's python and pip (and its package index settings).
    host_bin = Path(sys.executable).parent
    for index, stage in enumerate(dockerfile.stages[:-1]):
        assert stage.all("RUN"), f"build stage {stage.name or index} runs nothing"
        env = {**os.environ, "PATH": f"{host_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
        env.pop("PYTHONPATH", None)
        replay = replay_stage(stage, base / f"stage-{index}", env, runs=re.compile(""),
                              stages=done)
        done[stage.name or str(index)] = replay

    # The final stage: a fresh Python stands in for the base image's; pip knows nothing of
    # this machine's package indexes, so only the mounted wheels can satisfy the install.
    root = base / "final"
    root.mkdir()
    venv = base / "python"
    run_checked([sys.executable, "-m", "venv", str(venv)], what="python -m venv")
    venv_bin = venv / "bin"
    env = {"PATH": f"{venv_bin}{os.pathsep}{os.defpath}", "HOME": str(root / "root"),
           "LANG": "C.UTF-8", "PIP_CONFIG_FILE": os.devnull}
    final = replay_stage(dockerfile.final, root, env, runs=re.compile(r"\bpip\b"), stages=done)

    wheel_dirs = [p for r in done.values() for p in r.root.rglob("*") if p.is_dir()
                  and any(p.glob("*.whl"))]
    assert wheel_dirs, "the build stages made no wheels"
    wheels = sorted(w.name for d in wheel_dirs for w in d.iterdir())
    return Image(dockerfile, root, final.env, final.workdir, venv_bin, wheels)


# ---- the tests -------------------------------------------------------------------------------

def test_dockerfile_production_shape(dockerfile: Dockerfile) -> None:
    stages, final = dockerfile.stages, dockerfile.final
    assert len(stages) >= 2, "multi-stage: the wheels are built in a stage of their own"
    bases = {s.base for s in stages}
    assert len(bases) == 1, f"every stage on the same Python image (wheels fit it): {bases}"
    base = final.base
    assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", base), f"a slim Python base: {base}"
    requires = tomllib.loads((CONTEXT / "pyproject.toml").read_text())["project"]
    version = base.split(":")[1].split("-")[0]
    assert SpecifierSet(requires["requires-python"]).contains(f"{version}.0"), (
        f"{base} does not satisfy requires-python {requires['requires-python']}")

    build_runs = " ".join(i.args for s in stages[:-1] for i in s.all("RUN"))
    assert re.search(r"\bpip wheel\b.*--no-deps", build_runs), "the project's wheel, --no-deps"
    assert build_runs.count("pip wheel") >= 2, "the dependencies' wheels are built too"

    final_runs = [i.args for i in final.all("RUN")]
    for run in final_runs:
        for tool in BUILD_TOOLS:
            assert not re.search(rf"(?<![\w-]){re.escape(tool)}(?![\w-])", run), (
                f"the final stage installs {tool}: {run}")
    installs = [r for r in final_runs if re.search(r"\bpip install\b", r)]
    assert len(installs) == 1, f"one pip install in the final stage: {installs}"
    assert "--no-index" in installs[0] and "--find-links" in installs[0], installs[0]
    assert not final.all("ADD"), "nothing fetched into the final stage"

    user = final.last("USER")
    assert user is not None, "the final stage sets a USER"
    name = user.args.split(":")[0]
    assert name not in ("root", "0"), f"jit-bot must not run as root: USER {user.args}"
    assert final.instructions.index(user) < final.instructions.index(
        final.all("ENTRYPOINT")[-1]), "USER comes before the ENTRYPOINT"
    creates_user = [r for r in final_runs if "useradd" in r]
    assert creates_user and f"--uid {name}" in creates_user[0], "the user's uid is the USER"
    assert re.search(r"--shell \S*(nologin|false)\b", creates_user[0]), "no login shell"

    env: dict[str, str] = {}
    for instruction in final.all("ENV"):
        env.update(parse_env(instruction.args))
    workdir = final.last("WORKDIR")
    assert workdir is not None and workdir.args == "/var/lib/jit"
    assert env.get("JIT_CONFIG") == "/etc/jit/jit.yaml", env
    assert re.fullmatch(rf"sqlite:///{re.escape(workdir.args)}/[\w.-]+",
                        env.get("JIT_DATABASE_URL", "")), env
    assert env.get("PYTHONUNBUFFERED") == "1" and env.get("PYTHONDONTWRITEBYTECODE") == "1"
    expose = final.last("EXPOSE")
    assert expose is not None and expose.args.split("/")[0] == env.get("JIT_HTTP_PORT") == "3000"

    entrypoint = final.last("ENTRYPOINT")
    assert entrypoint is not None and entrypoint.exec_form() == ["jit-bot"]

    healthcheck = final.last("HEALTHCHECK")
    assert healthcheck is not None, "the final stage has a HEALTHCHECK"
    assert healthcheck.args.startswith("CMD ["), "HEALTHCHECK CMD in exec form (no shell)"
    argv = json.loads(healthcheck.args[len("CMD"):])
    assert argv[:2] == ["python", "-c"], argv
    assert "/healthz" in argv[2] and "JIT_HTTP_PORT" in argv[2] and "timeout" in argv[2], argv
    assert not re.search(r"\b(curl|wget)\b", healthcheck.args)
    assert seconds(healthcheck.flag("timeout") or "30s") <= 10

    assert re.search(r"\bjit db upgrade\b", " ".join(dockerfile.comments)), (
        "the comments name `jit db upgrade`, the release step on PostgreSQL")


def test_wheels_install_offline(image: Image) -> None:
    """Step 2 happened in the fixture; here, what it left."""
    assert any(w.startswith("jit-") for w in image.wheels), image.wheels
    not_wheels = [w for w in image.wheels if not w.endswith(".whl")]
    assert not not_wheels, f"the final stage would have to build these: {not_wheels}"
    assert not (image.root / "wheels").exists(), "the bind mount left the wheels behind"
    where = run_checked([str(image.which("python")), "-c",
                         "import bot.main, jitcore; print(jitcore.__file__)"],
                        what="importing jit", env=image.env, cwd=image.workdir)
    assert Path(where.stdout.strip()).is_relative_to(image.venv_bin.parent), where.stdout


def healthcheck(image: Image, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The HEALTHCHECK command exactly as the Dockerfile has it, with the image's python."""
    instruction = image.dockerfile.final.last("HEALTHCHECK")
    assert instruction is not None
    program, *args = json.loads(instruction.args[len("CMD"):])
    limit = seconds(instruction.flag("timeout") or "30s")
    try:
        return subprocess.run([str(image.which(program)), *args], env=env, cwd=image.workdir,
                              capture_output=True, text=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the HEALTHCHECK took more than its timeout ({limit}s)") from exc


@pytest.fixture
def policy_at_default_path(image: Image, aws_group: Any) -> Iterator[Path]:
    """The policy where JIT_CONFIG points (a deployment mounts it there)."""
    path = Path(image.env["JIT_CONFIG"])
    assert path.is_relative_to(image.root), f"JIT_CONFIG is not an image path: {path}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(aws_policy_data(aws_group.group_id)))
    yield path
    path.unlink()


def test_entrypoint_serves_healthcheck_and_stops(image: Image,
                                                 policy_at_default_path: Path) -> None:
    entrypoint = image.dockerfile.final.last("ENTRYPOINT")
    assert entrypoint is not None
    program, *args = entrypoint.exec_form()
    port = free_port()
    with SlackApiFake(bot_token=BOT_TOKEN) as slack:
        env = {**image.env, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SECRET,
               "SLACK_API_URL": slack.api_url, "JIT_HTTP_PORT": str(port),
               **{k: v for k, v in os.environ.items() if k.startswith("AWS_")}}
        proc = subprocess.Popen([str(image.which(program)), *args], env=env, cwd=image.workdir,
                                text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            def listening() -> bool:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                with socket.socket() as s:
                    return s.connect_ex(("127.0.0.1", port)) == 0
            wait_until(listening, 30, "the image's jit-bot to listen")
            started = time.monotonic()
            check = healthcheck(image, env)
            assert check.returncode == 0, (
                f"HEALTHCHECK failed against the running jit-bot (exit {check.returncode}):\n"
                f"{check.stdout}{check.stderr}")
            assert time.monotonic() - started < 10
        finally:
            proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=40)
    assert proc.returncode == 0, f"jit-bot did not stop cleanly on SIGTERM:\n{output}"
    assert "Traceback" not in output, output
    for secret in (BOT_TOKEN, SECRET):
        assert secret not in output
    database = image.env["JIT_DATABASE_URL"].removeprefix("sqlite:///")
    assert Path(database).is_file() and Path(database).parent == image.workdir, (
        "the SQLite database lands in the WORKDIR (the data volume)")

    stopped = healthcheck(image, env)
    assert stopped.returncode != 0, "HEALTHCHECK passes with nothing listening on the port"


def test_release_step_runs(image: Image) -> None:
    """The `docker run ... --entrypoint jit IMAGE db upgrade` written in the comments."""
    lines = [c for c in image.dockerfile.comments if "--entrypoint" in c]
    assert lines, "the comments show the release step as a docker run --entrypoint line"
    words = shlex.split(lines[0])
    program = words[words.index("--entrypoint") + 1]
    args = words[words.index("IMAGE") + 1:]
    assert [program, *args] == ["jit", "db", "upgrade"], lines[0]
    result = run_checked([str(image.which(program)), *args], what="the release step",
                         env=image.env, cwd=image.workdir)
    assert "Traceback" not in result.stdout + result.stderr
    assert "revision" in result.stdout, result.stdout
