"""Hashing: canonical encodings, code fingerprints of real pipeline files, and cache keys."""

from __future__ import annotations

import dataclasses
import enum
import importlib.util
import itertools
import json
import linecache
import os
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import NamedTuple

import numpy
import pytest
import torch

from flowlib import hashing
from flowlib.errors import WorkflowDefinitionError
from flowlib.fingerprint import Fingerprinter
from flowlib.hashing import (
    Fingerprint,
    UnhashableLiteral,
    diff_fingerprints,
    encode,
    find_project_root,
    hash_labelled,
    literal_digest,
    node_key,
    normalize_source,
    operator_fingerprint,
    tuple_digest,
)

_names = itertools.count()


class Project:
    """A project folder (with flow.toml) whose files the test writes, rewrites and imports."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, name: str, source: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
        return path

    def forget(self) -> None:
        """Drop this project's modules, so the next import reads the files as they are now."""
        for name, module in list(sys.modules.items()):
            if str(getattr(module, "__file__", None) or "").startswith(str(self.root)):
                del sys.modules[name]
        linecache.clearcache()

    def load(self, source: str, name: str = "pipeline.py", module_name: str | None = None):
        """Write `source` as the pipeline file and import it under a fresh module name."""
        path = self.write(name, source)
        self.forget()
        module_name = module_name or f"flow_test_pipeline_{next(_names)}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        return module

    def fingerprint(self, source: str, op: str = "op", version: str | None = None, **kw) -> Fingerprint:
        return operator_fingerprint(
            getattr(self.load(source, **kw), op), version=version, project_root=self.root
        )


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "flow.toml").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    # A rewrite within the same second and of the same size would otherwise reuse a stale .pyc.
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    proj = Project(tmp_path)
    yield proj
    proj.forget()


BASE = """
    import math

    SCALE = 3
    UNUSED = 10

    def double(x):
        return 2 * x

    def op(x: int) -> int:
        return double(x) * SCALE + int(math.sqrt(x))
"""


# -- what does not change the fingerprint ------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(
            """
            import math

            SCALE = 3
            UNUSED = 10

            def double(x):
                return 2*x

            def op(x : int)->int:
                return (double(x)*SCALE
                        + int(math.sqrt( x )))
            """,
            id="formatting",
        ),
        pytest.param(
            """
            import math
            # the scale
            SCALE = 3  # three
            UNUSED = 10

            def double(x):
                return 2 * x  # twice

            def op(x: int) -> int:
                # combine
                return double(x) * SCALE + int(math.sqrt(x))
            """,
            id="comments",
        ),
        pytest.param(
            '''
            import math

            SCALE = 3
            UNUSED = 10

            def double(x):
                """Double it."""
                return 2 * x

            def op(x: int) -> int:
                """Scale the double.

                With a long explanation.
                """
                return double(x) * SCALE + int(math.sqrt(x))
            ''',
            id="docstrings",
        ),
        pytest.param(
            """
            import math


            SCALE = 3
            UNUSED = 10



            def double(x):

                return 2 * x

            def op(x: int) -> int:


                return double(x) * SCALE + int(math.sqrt(x))
            """,
            id="blank-lines",
        ),
        pytest.param(
            """
            import math

            UNUSED = 10

            def unrelated():
                return "something else"

            def op(x: int) -> int:
                return double(x) * SCALE + int(math.sqrt(x))

            SCALE = 3

            def double(x):
                return 2 * x
            """,
            id="moved",
        ),
        pytest.param(BASE.replace("UNUSED = 10", "UNUSED = 11"), id="unreferenced-constant"),
    ],
)
def test_edits_that_are_not_code_keep_the_digest(project: Project, variant: str) -> None:
    before = project.fingerprint(BASE)
    after = project.fingerprint(variant)
    assert after.digest == before.digest
    assert diff_fingerprints(before.to_json(), after.to_json()) == []


def test_operator_options_in_the_decorator_are_not_code(project: Project) -> None:
    decorated = """
        def operator(**options):
            return lambda fn: fn

        @operator(retries={retries}, timeout=60)
        def op(x: int) -> int:
            return x + 1
    """
    assert (
        project.fingerprint(decorated.format(retries=3)).digest
        == project.fingerprint(decorated.format(retries=5)).digest
    )


def test_same_file_under_two_module_names_has_one_digest(project: Project) -> None:
    first = project.fingerprint(BASE, module_name="pipeline")
    second = project.fingerprint(BASE, module_name="__flow_pipeline__")
    assert first.digest == second.digest
    assert first.qualname == "op"


def test_fingerprint_is_the_same_in_other_processes(project: Project) -> None:
    source = """
        TAGS = {"alpha", "beta", "gamma", "delta"}
        TABLE = {"b": 2, "a": 1, "c": frozenset({"x", "y", "z"})}

        def op(x: int) -> int:
            return len(TAGS) + len(TABLE) + x
    """
    here = project.fingerprint(source).digest
    project.write("pipeline.py", source)
    script = (
        "import importlib.util, sys\n"
        "from flowlib.hashing import operator_fingerprint\n"
        "spec = importlib.util.spec_from_file_location('other_name', sys.argv[1])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['other_name'] = m; spec.loader.exec_module(m)\n"
        "print(operator_fingerprint(m.op, version=None, project_root=sys.argv[2]).digest)\n"
    )
    repo = Path(hashing.__file__).resolve().parents[1]
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(repo)}
        out = subprocess.run(
            [sys.executable, "-c", script, str(project.root / "pipeline.py"), str(project.root)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        assert out.stdout.strip() == here


# -- what changes it ---------------------------------------------------------------------------------------


def test_semantic_edit_to_the_operator_changes_the_digest(project: Project) -> None:
    before = project.fingerprint(BASE)
    after = project.fingerprint(BASE.replace("double(x) * SCALE", "double(x) * SCALE + 1"))
    assert after.digest != before.digest
    assert diff_fingerprints(before.to_json(), after.to_json()) == ["code changed: op"]


def test_edit_to_a_helper_and_a_helper_of_a_helper_changes_the_digest(project: Project) -> None:
    source = """
        def leaf(x):
            return x + {leaf}

        def middle(x):
            return leaf(x) * 2

        def op(x: int) -> int:
            return middle(x)
    """
    base = project.fingerprint(source.format(leaf=1))
    assert set(base.calls) == {"middle", "leaf"}
    edited = project.fingerprint(source.format(leaf=2))
    assert edited.digest != base.digest
    assert edited.source_hash == base.source_hash
    assert diff_fingerprints(base.to_json(), edited.to_json()) == ["code changed: leaf"]


@pytest.mark.parametrize(
    "pipeline",
    [
        "import helpers\n\ndef op(x: int) -> int:\n    return helpers.scale(x)\n",
        "from helpers import scale\n\ndef op(x: int) -> int:\n    return scale(x)\n",
        "def op(x: int) -> int:\n    import helpers\n    return helpers.scale(x)\n",
        "def op(x: int) -> int:\n    from helpers import scale\n    return scale(x)\n",
        "import pkg.tools\n\ndef op(x: int) -> int:\n    return pkg.tools.scale(x)\n",
    ],
    ids=["import-module", "from-import", "local-import", "local-from-import", "dotted-package"],
)
def test_edit_to_a_helper_in_another_project_module_changes_the_digest(
    project: Project, pipeline: str
) -> None:
    helpers = """
        def inner(x):
            return x - {inner}

        def scale(x):
            return inner(x) * 3
    """
    target = "pkg/tools.py" if "pkg" in pipeline else "helpers.py"
    project.write("pkg/__init__.py", "")
    project.write(target, helpers.format(inner=1))
    base = project.fingerprint(pipeline)
    assert {"scale", "inner"} <= set(base.calls)
    project.write(target, helpers.format(inner=2))
    edited = project.fingerprint(pipeline)
    assert edited.digest != base.digest
    assert diff_fingerprints(base.to_json(), edited.to_json()) == ["code changed: inner"]


def test_edit_to_an_operator_called_as_a_helper_changes_the_digest(project: Project) -> None:
    source = """
        class Operator:
            __flow_operator__ = True

            def __init__(self, fn):
                self.fn = fn

        def _prepare(x):
            return x * {factor}

        prepare = Operator(_prepare)

        def op(x: int) -> int:
            return prepare.fn(x) + prepare(x)
    """
    base = project.fingerprint(source.format(factor=2))
    assert "_prepare" in base.calls
    edited = project.fingerprint(source.format(factor=3))
    assert "code changed: _prepare" in diff_fingerprints(base.to_json(), edited.to_json())


def test_edit_to_a_project_class_changes_the_digest(project: Project) -> None:
    source = """
        class Model:
            def predict(self, x):
                return x * {weight}

        def op(x: int) -> int:
            return Model().predict(x)
    """
    base = project.fingerprint(source.format(weight=2))
    edited = project.fingerprint(source.format(weight=3))
    assert diff_fingerprints(base.to_json(), edited.to_json()) == ["code changed: Model"]


def test_recursion_and_mutual_recursion_terminate(project: Project) -> None:
    fp = project.fingerprint(
        """
        def even(n):
            return n == 0 or odd(n - 1)

        def odd(n):
            return n != 0 and even(n - 1)

        def op(n: int) -> int:
            return op(n - 1) if n > 100 else int(even(n))
        """
    )
    assert set(fp.calls) == {"even", "odd"}


def test_referenced_constants_change_the_digest(project: Project) -> None:
    project.write("settings.py", "FACTOR = 2\n")
    source = """
        import settings

        SCALE = {scale}
        NAMES = ("a", "b")

        def helper(x):
            return x * settings.FACTOR

        def op(x: int) -> int:
            return helper(x) * SCALE + len(NAMES)
    """
    base = project.fingerprint(source.format(scale=3))
    assert set(base.globals) == {"SCALE", "NAMES", "settings.FACTOR"}
    edited = project.fingerprint(source.format(scale=4))
    assert diff_fingerprints(base.to_json(), edited.to_json()) == ["constant changed: SCALE"]
    project.write("settings.py", "FACTOR = 5\n")
    again = project.fingerprint(source.format(scale=4))
    assert diff_fingerprints(edited.to_json(), again.to_json()) == ["constant changed: settings.FACTOR"]


def test_constant_in_a_default_argument_of_a_helper_counts(project: Project) -> None:
    source = """
        RATE = {rate}

        def helper(x, rate=RATE):
            return x * rate

        def op(x: int) -> int:
            return helper(x)
    """
    base = project.fingerprint(source.format(rate=1))
    assert project.fingerprint(source.format(rate=2)).digest != base.digest


def test_objects_that_are_not_constants_are_ignored(project: Project) -> None:
    source = """
        import logging
        log = logging.getLogger({name!r})

        def op(x: int) -> int:
            log.info("x=%s", x)
            return x
    """
    base = project.fingerprint(source.format(name="a"))
    assert base.globals == {} and base.packages == {}
    assert project.fingerprint(source.format(name="b")).digest == base.digest


def test_closure_values_count(project: Project) -> None:
    source = """
        def helper(x):
            return x + {step}

        def make(factor):
            def op(x: int) -> int:
                return helper(x) * factor
            return op

        op = make({factor})
    """
    base = project.fingerprint(source.format(step=1, factor=2))
    assert set(base.calls) == {"helper"} and set(base.globals) == {"factor"}
    assert project.fingerprint(source.format(step=1, factor=3)).digest != base.digest
    assert project.fingerprint(source.format(step=2, factor=2)).digest != base.digest


def test_flowlib_itself_enters_by_package_version(project: Project) -> None:
    fp = project.fingerprint(
        "from flowlib import errors\n\ndef op(x: int) -> int:\n"
        "    if x < 0:\n        raise errors.FlowError('negative')\n    return x\n"
    )
    assert set(fp.packages) == {"flowlib"} and fp.calls == {}


def test_version_changes_the_digest(project: Project) -> None:
    one = project.fingerprint(BASE, version="1")
    two = project.fingerprint(BASE, version="2")
    assert one.digest != two.digest != project.fingerprint(BASE).digest
    assert diff_fingerprints(one.to_json(), two.to_json()) == ["version changed: 1 -> 2"]


# -- third-party code enters by package version --------------------------------------------------------------


@pytest.mark.parametrize(
    "pipeline",
    [
        "import numpy as np\n\ndef op(x: int) -> int:\n    return int(np.sum([x]))\n",
        "from numpy import sum as total\n\ndef op(x: int) -> int:\n    return int(total([x]))\n",
        "def op(x: int) -> int:\n    import numpy\n    return int(numpy.linalg.norm([x]))\n",
        "import numpy as np\nMEAN = np.array([0.5, 0.25])\n\ndef op(x: int) -> int:\n    return int(MEAN[0] * x)\n",
    ],
    ids=["module", "function", "local-import", "array-constant"],
)
def test_third_party_references_record_the_package(project: Project, pipeline: str) -> None:
    fp = project.fingerprint(pipeline)
    assert fp.packages == {"numpy": numpy.__version__}
    assert fp.calls == {}


def test_stdlib_is_not_recorded_and_package_change_is_explained(project: Project) -> None:
    fp = project.fingerprint(
        "import os, math, torch\n\ndef op(x: int) -> int:\n"
        "    return int(math.sqrt(x)) + len(os.sep) + int(torch.ones(1).sum())\n"
    )
    assert fp.packages == {"torch": torch.__version__}
    old = dict(fp.to_json(), packages={"torch": "1.0"}, digest="old")
    assert diff_fingerprints(old, fp.to_json()) == [f"package changed: torch 1.0 -> {torch.__version__}"]


def test_fingerprint_is_json_and_cached(project: Project) -> None:
    module = project.load(BASE)
    fp = operator_fingerprint(module.op, version="3", project_root=project.root)
    assert json.loads(json.dumps(fp.to_json())) == fp.to_json()
    assert set(fp.to_json()) == {
        "digest",
        "qualname",
        "source_hash",
        "calls",
        "globals",
        "packages",
        "version",
    }
    fingerprinter = Fingerprinter(project.root)
    assert fingerprinter.of(module.op, version="3") is fingerprinter.of(module.op, version="3")
    assert fingerprinter.of(module.op, version="3") == fp
    assert (
        operator_fingerprint(module.op, version="3", project_root=project.root) is not fp
    )  # nothing kept per process


def test_a_non_function_cannot_be_fingerprinted(tmp_path: Path) -> None:
    with pytest.raises(WorkflowDefinitionError, match="plain function"):
        operator_fingerprint(len, version=None, project_root=tmp_path)


# -- normalize_source and the project root -------------------------------------------------------------------


def test_normalize_source_without_source_falls_back_to_bytecode() -> None:
    namespace: dict = {}
    exec("def f(x):\n    return x + 1\ndef g(x):\n    return x + 2\n", namespace)
    first, second = normalize_source(namespace["f"]), normalize_source(namespace["g"])
    assert first.startswith("<bytecode ") and first != second
    assert normalize_source(namespace["f"]) == first


def test_normalize_source_drops_docstrings_and_decorators() -> None:
    def deco(fn):
        return fn

    @deco
    def sample(x):
        """Docstring."""

        # a comment
        return x

    assert normalize_source(sample) == "def sample(x):\n    return x"


@pytest.mark.parametrize("marker", ["flow.toml", "pyproject.toml"])
def test_project_root_is_the_first_folder_upward_with_a_marker(tmp_path: Path, marker: str) -> None:
    (tmp_path / marker).write_text("")
    pipeline = tmp_path / "pipelines" / "deep" / "pipeline.py"
    pipeline.parent.mkdir(parents=True)
    pipeline.write_text("")
    assert find_project_root(pipeline) == tmp_path.resolve()
    assert find_project_root(str(pipeline)) == tmp_path.resolve()


def test_project_root_without_a_marker_is_the_files_folder(tmp_path: Path) -> None:
    pipeline = tmp_path / "a" / "pipeline.py"
    pipeline.parent.mkdir()
    pipeline.write_text("")
    root = find_project_root(pipeline)
    # A marker further up (outside tmp) would be legitimate; only check the fallback when there is none.
    if not any((p / m).exists() for p in tmp_path.parents for m in ("flow.toml", "pyproject.toml")):
        assert root == pipeline.parent.resolve()


# -- encode --------------------------------------------------------------------------------------------------


class Point(NamedTuple):
    x: int
    y: int


@dataclasses.dataclass
class Config:
    lr: float
    layers: list[int]


class Color(enum.Enum):
    RED = 1


class Level(enum.IntEnum):
    ONE = 1


class Token:
    def __init__(self, text: str) -> None:
        self.text = text

    def __flow_hash__(self) -> bytes:
        return self.text.encode()


def test_values_of_different_kinds_never_share_an_encoding() -> None:
    values = [
        1, 1.0, "1", b"1", True, None, 0, False, "", b"", (), [], {}, set(), frozenset(),
        [1, 2], (1, 2), Point(1, 2), {1, 2}, frozenset({1, 2}), ["a", "b"], ["ab"], ("a", "b"),
        Color.RED, Level.ONE, Token("1"), Path("1"), numpy.int64(1), numpy.float64(1.0),
        numpy.array(1), torch.tensor(1), 2**64, -1, float("inf"), -0.0, 0.0,
    ]  # fmt: skip
    encodings = [encode(v) for v in values]
    assert len(set(encodings)) == len(values)


def test_containers_are_canonical() -> None:
    assert encode({"a": 1, "b": 2}) == encode({"b": 2, "a": 1})
    assert encode({3, 1, 2}) == encode({2, 3, 1})
    assert encode([1, 2]) != encode([2, 1])
    assert encode({"a": [1, {"b": (2, 3)}]}) == encode({"a": [1, {"b": (2, 3)}]})


def test_structured_values_encode_by_type_and_fields() -> None:
    assert encode(Config(0.1, [1, 2])) == encode(Config(0.1, [1, 2]))
    assert encode(Config(0.1, [1, 2])) != encode(Config(0.2, [1, 2]))
    assert encode(Point(1, 2)) != encode((1, 2))
    assert encode(Token("a")) == encode(Token("a")) != encode(Token("b"))
    assert encode(Path("data/x.csv")) != encode("data/x.csv")


def test_arrays_encode_dtype_shape_and_data() -> None:
    a = numpy.arange(6, dtype=numpy.float32).reshape(2, 3)
    assert encode(a) == encode(a.copy())
    assert encode(a) != encode(a.reshape(3, 2))
    assert encode(a) != encode(a.astype(numpy.float64))
    assert encode(a.T) == encode(numpy.ascontiguousarray(a.T))
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    assert encode(t) == encode(t.clone()) == encode(t.requires_grad_())
    assert encode(t.T) == encode(t.T.contiguous())
    assert encode(t) != encode(t.reshape(3, 2)) != encode(t.double())
    assert encode(torch.zeros(2, dtype=torch.bfloat16)) != encode(torch.zeros(2, dtype=torch.float16))


@pytest.mark.parametrize("value", [object(), [1, object()], {"k": lambda: 1}, numpy.array([object()])])
def test_unhashable_literal_names_the_type_and_both_fixes(value: object) -> None:
    with pytest.raises(UnhashableLiteral) as info:
        encode(value)
    message = str(info.value)
    assert "__flow_hash__" in message and "operator" in message
    assert any(name in message for name in ("object", "function", "ndarray"))
    assert isinstance(info.value, WorkflowDefinitionError)


def test_unhashable_literal_takes_a_message_with_context_and_pickles() -> None:
    with pytest.raises(UnhashableLiteral) as info:
        literal_digest({"model": object()})
    assert info.value.value_type is object
    wrapped = UnhashableLiteral(f"operator 'train', parameter 'cfg': {info.value}")
    assert str(wrapped).startswith("operator 'train', parameter 'cfg': cannot hash a literal of type object:")
    assert str(pickle.loads(pickle.dumps(wrapped))) == str(wrapped)


def test_flow_hash_must_return_bytes() -> None:
    class Bad:
        def __flow_hash__(self) -> bytes:
            return "text"  # type: ignore[return-value]

    with pytest.raises(WorkflowDefinitionError, match="must return bytes"):
        encode(Bad())


# -- digests and keys ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [0, 1, -7, 2**70, "", "x", "ünïcode", True, None, 1.5, [1, "a"], Point(1, 2)]
)
def test_literal_digest_fast_path_matches_the_labelled_hash(value: object) -> None:
    assert literal_digest(value) == hash_labelled(["literal", value])


def test_literal_digest_is_fast_for_small_literals() -> None:
    start = time.perf_counter()
    for i in range(100_000):
        literal_digest(i)
    assert time.perf_counter() - start < 1.0


def test_node_key_sorts_inputs_and_tells_parameters_apart() -> None:
    assert node_key("fp", {"a": "d1", "b": "d2"}) == node_key("fp", {"b": "d2", "a": "d1"})
    assert node_key("fp", {"a": "d1", "b": "d2"}) != node_key("fp", {"a": "d2", "b": "d1"})
    assert node_key("fp", {"a": "d1"}) != node_key("fp2", {"a": "d1"})
    assert node_key("fp", {}) != node_key("fp", {"a": "d1"})


@pytest.mark.parametrize("inputs", [{}, {"a": "d1"}, {"b": "d2", "a": "d1", "é": "\udcff"}])
def test_node_key_is_the_labelled_hash_of_its_parts(inputs: dict[str, str]) -> None:
    """node_key builds its bytes by hand; they must be the general encoding's, or old caches miss."""
    expected = hash_labelled(["node", "fp", ["inputs", sorted(inputs.items())]])
    assert node_key("fp", inputs) == expected


def test_tuple_digest_is_its_own_kind() -> None:
    assert tuple_digest(["d1", "d2"]) == tuple_digest(["d1", "d2"])
    assert tuple_digest(["d1", "d2"]) != tuple_digest(["d2", "d1"])
    assert tuple_digest(["d1", "d2"]) != hash_labelled(["list", ["d1", "d2"]])
    assert len(tuple_digest([])) == 64


def test_many_literal_digests_at_once_equal_one_by_one() -> None:
    from flowlib.hashing import literal_digest, literal_digests

    for values in ([0, -1, 7, 10**40], ["", "a", "é", "x" * 1000]):
        assert literal_digests(values) == [literal_digest(v) for v in values]


def test_installed_providers_agree_with_importlib_metadata() -> None:
    from importlib.metadata import packages_distributions

    from flowlib.distributions import providers

    found = {name: sorted(d.metadata["Name"] for d in dists) for name, dists in providers().items()}
    assert found == {name: sorted(dists) for name, dists in packages_distributions().items()}


def test_a_package_named_otherwise_than_its_module_is_recorded_by_its_name(project: Project) -> None:
    import sklearn

    fp = project.fingerprint("def op(x: int) -> int:\n    import sklearn\n    return x\n")
    assert fp.packages == {"scikit-learn": sklearn.__version__}


def test_a_distribution_without_top_level_txt_is_found_from_its_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowlib.distributions import distribution_versions, providers

    info = tmp_path / "made_up_dist-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: made-up-dist\nVersion: 1.2.3\n")
    record = [
        "madeup/__init__.py,sha256=x,1",
        '"madeup/a,b.py",sha256=y,2',
        "made_single.py,,",
        "./made_dotted.py,,",
        "../../bin/tool,,",
    ]
    (info / "RECORD").write_text("\n".join([*record, "made_up_dist-1.2.3.dist-info/RECORD,,"]) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = providers()
    assert [d.metadata["Name"] for d in found["madeup"]] == ["made-up-dist"]
    assert [d.metadata["Name"] for d in found["made_single"]] == ["made-up-dist"]
    assert [d.metadata["Name"] for d in found["made_dotted"]] == ["made-up-dist"]
    assert "madeup/a,b" not in found and "tool" not in found  # a quoted path with a comma; not .py
    assert distribution_versions("madeup.sub", providers) == (("made-up-dist", "1.2.3"),)
    assert distribution_versions("json.decoder", providers) == ()
