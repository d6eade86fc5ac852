"""MkDocs hook: the CLI reference, generated from click's own `--help` at build time.

`docs/cli.md` holds the marker below; this hook replaces it with one section per
`flow` command and subcommand (walking the click group), each holding exactly the
text that `flow ... --help` prints, so the page cannot drift from the code.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MARKER = "<!-- flow-cli-reference -->"
WIDTH = 88  # the help text is wrapped as on an 88-column terminal, whatever the build machine's


def on_config(config: Any) -> Any:
    """Make the repository importable (flowlib may be built from a checkout that is not installed)."""
    root = str(Path(config.config_file_path).resolve().parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    return config


def walk(
    command: Any, path: tuple[str, ...], parent: Any = None
) -> Iterator[tuple[tuple[str, ...], Any, Any]]:
    """Yield (command path, command, click context) for `command` and every subcommand, depth first."""
    import click

    if parent is None:
        ctx = click.Context(
            command,
            info_name=path[-1],
            terminal_width=WIDTH,
            max_content_width=WIDTH,
            **command.context_settings,
        )
    else:
        ctx = click.Context(command, info_name=path[-1], parent=parent)
    yield path, command, ctx
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            yield from walk(command.get_command(ctx, name), (*path, name), ctx)


def anchor(path: tuple[str, ...]) -> str:
    return "-".join(path)


def reference() -> str:
    """The Markdown of every command's section."""
    from flowlib.cli.main import cli

    commands = list(walk(cli, ("flow",)))
    lines = ["| command | does |", "| --- | --- |"]
    for path, command, _ in commands[1:]:
        summary = command.get_short_help_str(limit=120).replace("|", "\\|")
        lines.append(f"| [`{' '.join(path)}`](#{anchor(path)}) | {summary} |")
    lines.append("")
    for path, command, ctx in commands:
        level = "#" * min(len(path) + 1, 4)
        lines += [
            f"{level} `{' '.join(path)}` {{ #{anchor(path)} }}",
            "",
            "```text",
            command.get_help(ctx).rstrip(),
            "```",
            "",
        ]
    return "\n".join(lines)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, reference())
