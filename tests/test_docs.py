"""The documentation builds with `mkdocs build --strict`, stays inside the repository, and its
CLI reference lists every `flow` command and option (walking the click group)."""

from __future__ import annotations

import html
import importlib.util
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing
        return False


_MISSING = [name for name in ("mkdocs", "material", "mkdocstrings_handlers.python") if not _installed(name)]
needs_mkdocs = pytest.mark.skipif(
    bool(_MISSING),
    reason=f"the docs tools are not installed ({', '.join(_MISSING)}): pip install -e '.[docs]'",
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    assert not re.search(r"^(WARNING|ERROR)\b", log, re.MULTILINE), log
    return out


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src", "action", "poster") and value:
                self.links.append(value)


@needs_mkdocs
def test_no_page_links_outside_the_site(site: Path) -> None:
    root = site.resolve()
    bad = []
    for page in sorted(site.rglob("*.html")):
        parser = _Links()
        parser.feed(page.read_text())
        for link in parser.links:
            parts = urlsplit(link)
            if parts.scheme == "data":
                continue
            if parts.scheme or parts.netloc:
                bad.append(f"{page.relative_to(site)}: {link} (outside the repository)")
            elif parts.path:
                base = root if parts.path.startswith("/") else page.parent  # 404.html links from the root
                target = (base / unquote(parts.path).lstrip("/")).resolve()
                if root not in (target, *target.parents) or not target.exists():
                    bad.append(f"{page.relative_to(site)}: {link} (not a file of the site)")
    assert not bad, "\n".join(bad)


def test_sources_never_point_outside_the_repository() -> None:
    """Every link in the docs' sources (and the README) is to a file of this repository."""
    bad = []
    for source in [ROOT / "README.md", *DOCS.rglob("*.md")]:
        for target in re.findall(r"\]\(([^)\s]+)\)", source.read_text()):
            parts = urlsplit(target)
            if parts.scheme or parts.netloc:
                bad.append(f"{source.relative_to(ROOT)}: {target} (a link out of the repository)")
            elif parts.path:
                resolved = (source.parent / unquote(parts.path)).resolve()
                if ROOT not in resolved.parents or not resolved.exists():
                    bad.append(f"{source.relative_to(ROOT)}: {target} (not a file of the repository)")
    assert not bad, "\n".join(bad)


def _commands() -> list[tuple[str, object]]:
    """Every command path of `flow` (`flow`, `flow run`, `flow cache ls`, ...) and its click command."""
    import click

    from flowlib.cli.main import cli

    found: list[tuple[str, object]] = []

    def walk(command: click.Command, path: str, ctx: click.Context) -> None:
        found.append((path, command))
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None
                walk(sub, f"{path} {name}", click.Context(sub, info_name=name, parent=ctx))

    walk(cli, "flow", click.Context(cli, info_name="flow"))
    return found


@needs_mkdocs
def test_cli_page_lists_every_command_and_option(site: Path) -> None:
    import click

    page = html.unescape(re.sub(r"<[^>]+>", "", (site / "cli" / "index.html").read_text()))
    commands = _commands()
    assert len(commands) > 10
    missing = []
    for path, command in commands:
        if f"Usage: {path} " not in page:
            missing.append(path)
        for param in command.params:  # type: ignore[attr-defined]
            if isinstance(param, click.Option):
                missing += [f"{path} {opt}" for opt in param.opts + param.secondary_opts if opt not in page]
    assert not missing, f"not in the CLI reference: {missing}"


def test_every_command_module_is_listed_for_lazy_loading() -> None:
    """`flow` imports a command's module only when the command is used: the name -> module map
    must hold exactly the commands the modules define."""
    import importlib
    import pkgutil

    import flowlib.cli
    from flowlib.cli.main import COMMAND_MODULES

    defined = {}
    for info in pkgutil.iter_modules(flowlib.cli.__path__):
        if info.name.endswith("_cmd"):
            module = importlib.import_module(f"flowlib.cli.{info.name}")
            defined.update({command.name: info.name for command in module.COMMANDS})
    assert defined == COMMAND_MODULES
