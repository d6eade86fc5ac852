"""Property tests (Hypothesis) for operator fingerprints (flowlib.fingerprint): generated formatting
edits (blank lines, comments at any indentation, trailing comments and spaces, docstrings, quotes,
line breaks inside brackets, `ruff format`) keep an operator's digest; a changed constant, default
or statement changes it. The operator is a top-level function or one made inside a factory."""

from __future__ import annotations

import importlib.util
import itertools
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from strategies import FAST

from flowlib.fingerprint import Fingerprinter

RUFF = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
HAVE_RUFF = Path(RUFF).is_file()  # the dev extra installs it
_names = itertools.count()


@dataclass(frozen=True)
class Code:
    """One pipeline file's code; the fields are what a semantic edit changes."""

    scale: int = 3
    threshold: int = 10
    step: str = "-"  # `total -= 1`
    helper_op: str = "*"  # `v * SCALE`
    names: tuple[str, ...] = ("a", "b")
    default: int = 2
    nested: bool = False  # the operator is made inside a factory function
    # formatting
    double_quotes: bool = False
    docstring: str = "Add things."
    broken_lines: bool = False  # `total = (\n helper(x)\n + y\n)`

    def lines(self) -> list[str]:
        quote = '"' if self.double_quotes else "'"
        names = ", ".join(f"{quote}{n}{quote}" for n in self.names)
        doc = self.docstring.replace("\\", "").replace('"', "")
        total = (
            ["    total = (", "        helper(x)", "        + y", "    )"]
            if self.broken_lines
            else ["    total = helper(x) + y"]
        )
        op = [
            "@operator(retries=1)",
            f"def op(x: int, y: int = {self.default}) -> int:",
            f'    """{doc}"""',
            *total,
            f"    if total > {self.threshold}:",
            f"        total {self.step}= 1",
            "    return total + len(NAMES)",
        ]
        if self.nested:
            op = ["def make():", *("    " + line for line in op), "    return op", "", "", "op = make()"]
        return [
            "from flowlib import operator",
            "",
            f"SCALE = {self.scale}",
            f"NAMES = ({names},)",
            "",
            "",
            "def helper(v):",
            f"    return v {self.helper_op} SCALE",
            "",
            "",
            *op,
        ]


comment_text = st.text(st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp")), max_size=12)
# (kind, line index, indentation, text): a blank or comment line inserted before a line, or a
# trailing comment or spaces after one
edits = st.lists(
    st.tuples(
        st.sampled_from(["blank", "comment", "trailing comment", "trailing spaces"]),
        st.integers(0, 40),
        st.sampled_from([0, 1, 2, 4, 8, 12]),
        comment_text,
    ),
    max_size=8,
)


def formatted(code: Code, changes: list[tuple[str, int, int, str]], ruff: bool) -> str:
    lines = code.lines()
    for kind, at, indent, text in changes:
        at %= len(lines)
        if kind == "blank":
            lines.insert(at, " " * indent)
        elif kind == "comment":
            lines.insert(at, " " * indent + "#" + text)
        elif kind == "trailing comment" and lines[at].strip():
            lines[at] += "  #" + text
        elif kind == "trailing spaces":
            lines[at] += " " * indent
    source = "\n".join(lines) + "\n"
    if ruff and HAVE_RUFF:
        done = subprocess.run(
            [RUFF, "format", "--isolated", "--stdin-filename", "pipeline.py", "-"],
            input=source,
            capture_output=True,
            text=True,
            check=True,
        )
        source = done.stdout
    return source


@pytest.fixture(scope="module")
def fingerprint(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    root = tmp_path_factory.mktemp("fingerprints")
    (root / "flow.toml").write_text("")
    loaded: list[str] = []

    def digest(source: str) -> str:
        name = f"props_fp_{next(_names)}"  # a new file each time: no stale line cache
        path = root / f"{name}.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module: ModuleType = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        loaded.append(name)
        spec.loader.exec_module(module)
        return Fingerprinter(root).of(module.op, version=None).digest

    yield digest
    for name in loaded:
        sys.modules.pop(name, None)


base_code = st.builds(
    Code,
    scale=st.integers(-5, 5),
    threshold=st.integers(0, 99),
    step=st.sampled_from(["-", "+"]),
    nested=st.booleans(),
)
formatting = st.fixed_dictionaries(
    {
        "double_quotes": st.booleans(),
        "docstring": comment_text,
        "broken_lines": st.booleans(),
    }
)


@FAST
@given(base_code, formatting, edits, st.booleans())
@example(Code(nested=True), {}, [("comment", 14, 0, " a comment at column 0")], False)
@example(Code(nested=True), {"broken_lines": True}, [("comment", 15, 0, "")], True)
def test_formatting_edits_keep_the_fingerprint(
    fingerprint, code: Code, layout: dict, changes: list, ruff: bool
) -> None:
    before = fingerprint(formatted(code, [], False))
    after = fingerprint(formatted(replace(code, **layout), changes, ruff))
    assert after == before


semantic = st.sampled_from(["scale", "threshold", "step", "helper_op", "names", "default"])


def _changed(code: Code, what: str) -> Code:
    swap = {"-": "+", "+": "-", "*": "//", "//": "*"}
    if what in ("step", "helper_op"):
        return replace(code, **{what: swap[getattr(code, what)]})
    if what == "names":
        return replace(code, names=(*code.names, "c"))
    return replace(code, **{what: getattr(code, what) + 1})


@FAST
@given(base_code, semantic, formatting, edits, st.booleans())
def test_a_semantic_edit_changes_the_fingerprint(
    fingerprint, code: Code, what: str, layout: dict, changes: list, ruff: bool
) -> None:
    before = fingerprint(formatted(code, [], False))
    after = fingerprint(formatted(replace(_changed(code, what), **layout), changes, ruff))
    assert after != before, what


def test_a_comment_at_column_0_inside_a_nested_operator_keeps_its_fingerprint(fingerprint) -> None:
    plain = Code(nested=True).lines()
    commented = [*plain[:-5], "# a comment at column 0", *plain[-5:]]  # inside make().op's body
    assert commented[-6].startswith("# a comment") and commented[-5].startswith("        return")
    assert fingerprint("\n".join(commented) + "\n") == fingerprint("\n".join(plain) + "\n")
