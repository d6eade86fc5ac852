"""`flow show`: print a workflow's DAG without running it."""

from __future__ import annotations

import contextlib
import gc
import json
import re
from collections.abc import Iterator

import click

from flowlib.cli.options import params_options
from flowlib.dag import DAG, Container, Input, Literal, Ref
from flowlib.errors import FlowError, WorkflowDefinitionError
from flowlib.loading import innermost_site, one_line, select_workflow
from flowlib.params import parse_params, read_params_file, split_assignments
from flowlib.plan import Plan
from flowlib.workflows import Workflow


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a DAG is built and compiled: those make objects
    that all stay alive, and a 100,000-item map paid ~0.2 s for full passes over them. A command
    is one process, so pausing it here touches no one else; it is back on afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def compile_from_cli(dag: DAG) -> Plan:
    """The DAG's plan, compiled with the collector paused (see `collector_paused`)."""
    from flowlib.compile import compile_dag

    with collector_paused():
        return compile_dag(dag)


def build_from_cli(
    file: str, workflow: str | None, params: tuple[str, ...], params_file: str | None
) -> tuple[Workflow, DAG]:
    """Load FILE, pick the workflow, parse its parameters and build the DAG."""
    wf = select_workflow(file, workflow)
    from_file = read_params_file(params_file) if params_file else None
    values = parse_params(wf, split_assignments(params), from_file)
    try:
        with collector_paused():
            return wf, wf.build(**values)
    except FlowError:
        raise
    except Exception as exc:  # the workflow body itself raised while building: one line, no traceback
        raise WorkflowDefinitionError(
            f"{innermost_site(exc, wf.file)}: workflow '{wf.name}' raised while building its DAG: {one_line(exc)}"
        ) from None


def render_text(dag: DAG) -> str:
    lines = [f"workflow {dag.workflow} ({len(dag.nodes)} nodes)"]
    for node in dag.nodes.values():
        parts = [f"{param}={_shown(value)}" for param, value in node.inputs.items()]
        if node.items is not None:
            parts.append(f"items={len(node.items)}")
        kind = " [map]" if node.kind == "map" else ""
        lines.append(f"  {node.name}{kind} <- {node.operator.qualname}({', '.join(parts)})")
    return "\n".join(lines)


def _shown(value: Input) -> str:
    if isinstance(value, Ref):
        return value.node + ("" if value.output == "return" else f".{value.output}")
    if isinstance(value, Container):
        items = [_shown(item) for item in value.items]
        if value.kind == "dict":
            items = [f"{k!r}: {v}" for k, v in zip(value.keys or (), items, strict=True)]
            return "{" + ", ".join(items) + "}"
        return ("[{}]" if value.kind == "list" else "({})").format(", ".join(items))
    assert isinstance(value, Literal)
    shown = repr(value.value)
    return shown if len(shown) < 30 else shown[:27] + "..."


def _quoted(name: str) -> str:
    return json.dumps(name)


def render_dot(dag: DAG) -> str:
    lines = [f"digraph {_quoted(dag.workflow)} {{", "  rankdir=LR;", "  node [shape=box];"]
    lines += [f"  {_quoted(name)};" for name in dag.nodes]
    lines += [f"  {_quoted(src)} -> {_quoted(dst)};" for src, dst in dag.edges()]
    lines.append("}")
    return "\n".join(lines)


def render_mermaid(dag: DAG) -> str:
    ids = {name: f"n{index}" for index, name in enumerate(dag.nodes)}
    lines = ["flowchart LR"]
    for name, node in dag.nodes.items():
        label = re.sub(r'["<>]', "", name)
        shape = f'[["{label}"]]' if node.kind == "map" else f'["{label}"]'
        lines.append(f"  {ids[name]}{shape}")
    lines += [f"  {ids[src]} --> {ids[dst]}" for src, dst in dag.edges()]
    return "\n".join(lines)


RENDERERS = {
    "text": render_text,
    "dot": render_dot,
    "mermaid": render_mermaid,
    "json": lambda dag: json.dumps(dag.to_json(), indent=2, default=repr),
}


@click.command("show")
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("workflow", required=False)
@params_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(list(RENDERERS)),
    default="text",
    show_default=True,
    help="Output format.",
)
def show(file: str, workflow: str | None, params: tuple[str, ...], params_file: str | None, fmt: str) -> None:
    """Print the DAG of WORKFLOW in FILE without running it.

    FILE is a pipeline file; WORKFLOW may be left out when FILE defines one workflow.
    """
    _, dag = build_from_cli(file, workflow, params, params_file)
    click.echo(RENDERERS[fmt](dag))


COMMANDS = [show]
