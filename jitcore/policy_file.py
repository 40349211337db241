"""The policy file (DESIGN.md §5): YAML in, a checked `jitcore.policy.Policy` out.

`jitcore.policy_schema` describes the file and checks every value. Here the YAML is
read, and every problem becomes one line, `<file>: <field path>: <what is wrong>`;
all of them travel together in one `PolicyError`, in file order.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Hashable, Mapping
from dataclasses import dataclass

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from jitcore.errors import PolicyError, PolicyProblems
from jitcore.policy import Policy
from jitcore.policy_fields import kind_of, must_be
from jitcore.policy_schema import (
    MAX_VALUES,
    AutoApproveSpec,
    AwsSpec,
    AzureSpec,
    DefaultsSpec,
    Loc,
    PolicySpec,
    PortSpec,
    SlackSpec,
    Spec,
    TargetSpec,
    to_policy,
)

__all__ = ["load_policy", "parse_policy"]


# --- problems as lines -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Place:
    """Where a value sits in the YAML text, and how its key was written there."""

    line: int
    column: int
    label: str


_FIELDS_AT: list[tuple[tuple[str | None, ...], type[Spec]]] = [
    ((), PolicySpec),
    (("slack",), SlackSpec),
    (("defaults",), DefaultsSpec),
    (("targets", None), TargetSpec),
    (("targets", None, "aws"), AwsSpec),
    (("targets", None, "azure"), AzureSpec),
    (("targets", None, "auto_approve"), AutoApproveSpec),
    (("targets", None, "ports", None), PortSpec),
]


def _unknown_field(loc: Loc) -> str:
    parent = loc[:-1]
    for pattern, model in _FIELDS_AT:
        if len(pattern) == len(parent) and all(p is None or p == s for p, s in zip(pattern, parent,
                                                                                   strict=True)):
            fields = list(model.model_fields)
            close = difflib.get_close_matches(str(loc[-1]), fields, n=1, cutoff=0.7)
            if close:
                return f"unknown field; did you mean {close[0]}?"
            return f"unknown field; expected one of: {', '.join(fields)}"
    return "unknown field"


_EXPECTED = {
    "string_type": "text",
    "int_type": "a whole number",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _describe(error: ErrorDetails) -> str:
    """pydantic's error in the words of this file's messages."""
    kind, value = error["type"], error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "value_error":  # raised by our validators, already in our words
        return str(ctx.get("error", error["msg"]))
    if kind == "missing":
        return "is required"
    if kind in ("extra_forbidden", "invalid_key"):
        return _unknown_field(tuple(error["loc"]))
    if kind in _EXPECTED:
        return must_be(_EXPECTED[kind], value)
    if kind == "literal_error":
        expected = str(ctx.get("expected"))
        if isinstance(value, str):
            return f"must be {expected}, not {value!r}"
        return must_be(expected, value)
    if kind == "recursion_loop":
        return "refers to itself"
    return error["msg"]


def _problems(exc: ValidationError) -> list[tuple[Loc, str]]:
    found: list[tuple[Loc, str]] = []
    for error in exc.errors():
        loc: Loc = tuple(error["loc"])
        if loc and loc[-1] == "[key]":  # a mapping key is wrong: name the key itself
            loc = loc[:-1]
        raised = (error.get("ctx") or {}).get("error")
        if isinstance(raised, PolicyProblems):
            found.extend(((*loc, *sub), message) for sub, message in raised.problems)
        else:
            found.append((loc, _describe(error)))
    return found


def _label(segment: Hashable) -> str:
    if isinstance(segment, int) and not isinstance(segment, bool):
        return f"[{segment}]"
    return str(segment)


def _render(source: str, problems: list[tuple[Loc, str]], places: Mapping[Loc, _Place]) -> str:
    def position(loc: Loc) -> tuple[int, int]:
        for end in range(len(loc), 0, -1):
            place = places.get(loc[:end])
            if place is not None:
                return place.line, place.column
        return 0, 0

    lines = []
    for loc, message in sorted(problems, key=lambda problem: position(problem[0])):
        path = ""
        for end in range(1, len(loc) + 1):
            place = places.get(loc[:end])
            label = place.label if place else _label(loc[end - 1])
            if not label.isprintable():  # keep one problem to one line
                label = repr(label)
            path += label if label.startswith("[") or not path else f".{label}"
        lines.append(f"{source}: {path}: {message}" if path else f"{source}: {message}")
    return "\n".join(lines)


# --- reading the file ------------------------------------------------------------------


def _map_nodes(
    root: yaml.Node, loader: yaml.SafeLoader, source: str
) -> tuple[dict[Loc, _Place], list[tuple[Loc, str]]]:
    """Every value's place in the text, plus keys written twice (YAML keeps the last quietly)."""
    places: dict[Loc, _Place] = {}
    duplicates: list[tuple[Loc, str]] = []
    visited = 0
    open_nodes: set[int] = set()

    def walk(node: yaml.Node, loc: Loc, merged_in: bool = False) -> None:
        nonlocal visited
        visited += 1
        if visited > MAX_VALUES:
            raise PolicyError(f"{source}: too large: aliases expand it past {MAX_VALUES} values")
        if id(node) in open_nodes:
            raise PolicyError(f"{source}: line {node.start_mark.line + 1}: "
                              "an alias refers to the value that contains it")
        open_nodes.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                places.setdefault((*loc, index), _Place(item.start_mark.line,
                                                        item.start_mark.column, f"[{index}]"))
                walk(item, (*loc, index), merged_in)
        elif isinstance(node, yaml.MappingNode):
            written: dict[Hashable, int] = {}
            merged: list[yaml.Node] = []
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    merged.append(value_node)
                    continue
                if not isinstance(key_node, yaml.ScalarNode):
                    continue  # the constructor refuses it with a marked error
                key = loader.construct_object(key_node)
                line = key_node.start_mark.line
                if key in written and not merged_in:  # reported where the anchor is written
                    duplicates.append(((*loc, key), f"is defined twice (lines {written[key] + 1} "
                                                    f"and {line + 1}); remove one"))
                written[key] = line
                places[(*loc, key)] = _Place(line, key_node.start_mark.column, key_node.value)
                walk(value_node, (*loc, key), merged_in)
            for value_node in merged:  # `<<: *base` keys sit where the alias is used
                walk_merged(value_node, loc)
        open_nodes.discard(id(node))

    def walk_merged(node: yaml.Node, loc: Loc) -> None:
        if isinstance(node, yaml.SequenceNode):
            for item in node.value:
                walk_merged(item, loc)
        elif isinstance(node, yaml.MappingNode):
            before = dict(places)
            walk(node, loc, merged_in=True)
            places.update(before)  # keys written in place win over merged ones

    walk(root, ())
    return places, duplicates


def _yaml_problem(source: str, exc: yaml.YAMLError, text: str) -> str:
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        return f"{source}: line {line}: {exc.reason} (character #x{code:04x})"
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        what = exc.problem or "invalid YAML"
        if exc.context:
            what = f"{what} ({exc.context})"
        return f"{source}: line {mark.line + 1}, column {mark.column + 1}: {what}"
    return f"{source}: not valid YAML: {' '.join(str(exc).split())}"


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read and check the policy file. Raises PolicyError, naming every problem found."""
    source = os.fspath(path)
    text = _read(source)
    places: dict[Loc, _Place] = {}
    duplicates: list[tuple[Loc, str]] = []
    data: object = None
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:  # the reader refuses control characters up front
        raise PolicyError(_yaml_problem(source, exc, text)) from None
    try:
        root = loader.get_single_node()
        if root is not None:
            places, duplicates = _map_nodes(root, loader, source)
            data = loader.construct_document(root)
    except yaml.YAMLError as exc:
        raise PolicyError(_yaml_problem(source, exc, text)) from None
    except ValueError as exc:  # the constructor's int() and date(), e.g. `!!int x`, 2024-13-01
        raise PolicyError(f"{source}: not valid YAML: {exc}") from None
    except RecursionError:
        raise PolicyError(f"{source}: nested too deeply to be a policy file") from None
    finally:
        loader.dispose()
    return _parse(data, source, places, duplicates)


def _read(source: str) -> str:
    try:
        with open(source, encoding="utf-8") as file:
            return file.read()
    except FileNotFoundError:
        raise PolicyError(f"{source}: file not found (set JIT_CONFIG or pass --config)") from None
    except IsADirectoryError:
        raise PolicyError(f"{source}: is a directory, not a policy file") from None
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{source}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise PolicyError(f"{source}: cannot read: {exc.strerror or exc}") from None


def parse_policy(data: object, source: str = "<policy>") -> Policy:
    """Check an already-parsed policy mapping. Raises PolicyError, naming every problem found."""
    return _parse(data, source, {}, [])


def _parse(
    data: object, source: str, places: Mapping[Loc, _Place], found: list[tuple[Loc, str]]
) -> Policy:
    if data is None:
        raise PolicyError(f"{source}: the policy is empty; it needs at least a targets section")
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: the top level must be a mapping with slack, defaults and "
                          f"targets, not {kind_of(data)}")
    problems = list(found)
    spec: PolicySpec | None = None
    try:
        spec = PolicySpec.model_validate(data)
    except ValidationError as exc:
        problems.extend(_problems(exc))
    if problems or spec is None:
        raise PolicyError(_render(source, problems, places))
    return to_policy(spec, source)
