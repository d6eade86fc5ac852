"""The web UI in a real browser: headless Chromium (driven by Playwright) against a real
`flow server` process with tokens, as a team would use it. Every page visited is screenshotted
(under the test's tmp folder, and $FLOW_UI_SCREENSHOTS when set)."""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
import time
from typing import Any

import pytest
from browser import CHROMIUM, FLAGS, Shots, skip_without_browser
from e2e import make_project
from server import start_server, wait_for

PIPELINE = """
import time
from flowlib import current, operator, workflow

@operator
def numbers(n: int) -> list[int]:
    print("<script>alert(1)</script>")
    return list(range(n))

@operator
def train(i: int, lr: float, seconds: float) -> float:
    for step in range(4):
        current.log_metric("loss", lr / (step + 1 + i), step=step)
    time.sleep(seconds)
    return i * lr

@operator
def total(xs: list[float]) -> float:
    current.log_metric("score", sum(xs))
    return sum(xs)

@workflow
def demo(n: int = 4, lr: float = 0.1, seconds: float = 0.0, tag: str = "x", fast: bool = True,
         sizes: list[int] = [1, 2]) -> float:
    return total(train.map(numbers(n), lr=lr, seconds=seconds))
"""

CHATTY = """
import time
from flowlib import operator, workflow

@operator
def chatty(lines: int, pause: float) -> int:
    for i in range(lines):
        print(f"line {i}", flush=True)
        time.sleep(pause)
    return lines

@workflow
def talk(lines: int = 60, pause: float = 0.25) -> int:
    return chatty(lines, pause)
"""


# -- fixtures: one project, one server, one browser for the module -----------------------------------
@pytest.fixture(scope="module")
def sync_api():  # type: ignore[no-untyped-def]
    return skip_without_browser()


@pytest.fixture(scope="module")
def project(tmp_path_factory, sync_api):  # type: ignore[no-untyped-def]
    made = make_project(tmp_path_factory.mktemp("ui") / "proj")
    made.write("p.py", PIPELINE)
    made.write("talk.py", CHATTY)
    return made


@pytest.fixture(scope="module")
def tokens(project):  # type: ignore[no-untyped-def]
    made = {}
    for name, admin in (("ada", True), ("bob", False)):
        done = project.flow("token", "create", name, *(["--admin"] if admin else []))
        assert done.code == 0, done
        made[name] = done.out.strip()
    return made


@pytest.fixture(scope="module")
def server(project, tokens):  # type: ignore[no-untyped-def]
    started = start_server(project, "--max-runs", "3", token=tokens["ada"], name="ui-server")
    yield started
    started.kill()


@pytest.fixture(scope="module")
def browser(sync_api):  # type: ignore[no-untyped-def]
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):  # type: ignore[no-untyped-def]
    return Shots(tmp_path_factory.mktemp("screenshots"))


def signed_in(browser, server, token: str):  # type: ignore[no-untyped-def]
    """A browser context whose session cookie came from opening a page with ?token=…"""
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.goto(f"{server.url}/?token={token}")
    page.wait_for_url(f"{server.url}/runs")
    return context, page


@pytest.fixture
def ada(browser, server, tokens):  # type: ignore[no-untyped-def]
    context, page = signed_in(browser, server, tokens["ada"])
    yield page
    context.close()


def cli(project, server, token: str, *args: str, timeout: float = 120):  # type: ignore[no-untyped-def]
    return project.flow(*args, env={"FLOW_SERVER": server.url, "FLOW_TOKEN": token}, timeout=timeout)


def submit(project, server, token: str, file: str, *params: str) -> str:  # type: ignore[no-untyped-def]
    args = [p for param in params for p in ("-p", param)]
    done = cli(project, server, token, "submit", file, *args)
    assert done.code == 0, done
    return done.out.strip()


def finished(server, run_id: str, timeout: float = 90) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    def ended() -> Any:
        _, run = server.request("GET", f"/api/runs/{run_id}")
        return run if run["status"] not in ("queued", "pending", "running") else None

    run = wait_for(ended, timeout=timeout)
    assert run is not None, f"run {run_id} did not end within {timeout} s"
    return run


@pytest.fixture(scope="module")
def two_runs(project, server, tokens):  # type: ignore[no-untyped-def]
    """Two finished runs of p.py that differ in lr."""
    ids = [submit(project, server, tokens["ada"], "p.py", f"lr={lr}") for lr in (0.1, 0.5)]
    for run_id in ids:
        assert finished(server, run_id)["status"] == "succeeded"
    return ids


def until(page, predicate: str, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    """Poll a JS predicate (page.wait_for_function evaluates strings, which the UI's CSP forbids)."""
    from playwright.sync_api import Error

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if page.evaluate(predicate):
                return True
        except Error:  # the page navigated (reloaded) while it was asked: ask again
            pass
        page.wait_for_timeout(100)
    return False


# -- tests ------------------------------------------------------------------------------------------------
def test_a_page_needs_a_token_and_the_session_cookie_is_httponly_and_strict(
    browser, server, tokens, two_runs, shots
) -> None:  # type: ignore[no-untyped-def]
    context = browser.new_context()
    page = context.new_page()
    answer = page.goto(f"{server.url}/runs")
    assert answer.status == 401
    assert page.locator("input[name=token]").count() == 1
    assert (
        two_runs[0] not in page.content() and "demo" not in page.content()
    )  # the login page shows nothing else
    shots.take(page, "login")
    assert page.goto(f"{server.url}/runs/{two_runs[0]}?token=flow_wrong").status == 401
    page.fill("input[name=token]", tokens["bob"])
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/runs/{two_runs[0]}")  # back where it was asked for, token gone
    cookie = next(c for c in context.cookies() if c["name"] == "flow_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert page.locator("#run-page").count() == 1
    context.close()
    bare = browser.new_context()  # the API's bearer token opens a page too
    answer = bare.request.get(f"{server.url}/runs", headers={"Authorization": f"Bearer {tokens['bob']}"})
    assert answer.status == 200 and two_runs[0] in answer.text()
    assert bare.request.get(f"{server.url}/runs").status == 401
    bare.close()


def test_every_page_opens(ada, project, server, tokens, two_runs, shots) -> None:  # type: ignore[no-untyped-def]
    first, second = two_runs
    db = project.root / ".flow" / "flow.db"
    with sqlite3.connect(db) as conn:  # what the sweeps feature records: two trials of a sweep
        conn.execute(
            "INSERT INTO sweeps (name, workflow, file, objective, direction, storage, settings, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                "lr-search",
                "demo",
                "p.py",
                "score",
                "maximize",
                "",
                json.dumps({"space": {"lr": "float(0.01,1)"}}),
                time.time(),
            ),
        )
        for trial, run_id in enumerate(two_runs):
            conn.execute("UPDATE runs SET sweep = ?, trial = ? WHERE id = ?", ("lr-search", trial, run_id))
    assert cli(project, server, tokens["ada"], "deploy", "p.py", "--name", "demo").code == 0
    pages = {
        "runs": ("/runs", "table.runs tbody tr[data-run]"),
        "runs_filtered": ("/runs?param=lr%3D0.5&sort=duration", "table.runs tbody tr[data-run]"),
        "run": (f"/runs/{first}", "#run-dag svg.dag a.box"),
        "node_map": (f"/runs/{first}/nodes/train", "table.plain"),
        "node_item": (f"/runs/{first}/nodes/train%5B2%5D", "#why"),
        "compare": (f"/compare?runs={first},{second}", "table.compare"),
        "deployments": ("/deployments", "text=Launch…"),
        "launch": ("/deployments/demo/launch", "#launch-form"),
        "sweep": ("/sweeps/lr-search", "svg.parallel"),
    }
    for name, (path, ready) in pages.items():
        answer = ada.goto(server.url + path)
        assert answer.status == 200, (path, answer.status)
        ada.wait_for_selector(ready)
        shots.take(ada, name)
    filtered = ada.goto(server.url + "/runs?param=lr%3D0.5")
    assert filtered.status == 200 and ada.locator("tr[data-run]").count() == 1
    assert ada.goto(server.url + "/runs/nope").status == 404
    shots.take(ada, "not_found")
    ada.goto(f"{server.url}/runs/{first}")
    assert ada.locator("#run-dag a.box.kind-map text.name").text_content() == "train[0..3]"
    assert "4 succeeded" in ada.locator("#run-dag a.box.kind-map").text_content()


def test_a_log_line_with_a_script_tag_shows_as_text(ada, server, two_runs, shots) -> None:  # type: ignore[no-untyped-def]
    dialogs: list[str] = []
    ada.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    ada.goto(f"{server.url}/runs/{two_runs[0]}/nodes/numbers")
    assert ada.locator("pre.log").first.inner_text().strip() == "<script>alert(1)</script>"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in ada.content()
    shots.take(ada, "node_script_log")
    assert dialogs == []


def test_launch_from_the_generated_form_and_watch_the_dag_turn_green(
    ada, server, project, tokens, shots
) -> None:  # type: ignore[no-untyped-def]
    assert cli(project, server, tokens["ada"], "deploy", "p.py", "--name", "demo").code == 0
    ada.goto(f"{server.url}/deployments/demo/launch")
    form = ada.locator("#launch-form")
    kinds = {
        name: form.locator(f"[name={name}]").last.evaluate("e => e.tagName + ':' + e.type")
        for name in ("n", "lr", "seconds", "tag", "fast", "sizes")
    }
    assert kinds == {
        "n": "INPUT:number",
        "lr": "INPUT:number",
        "seconds": "INPUT:number",
        "tag": "INPUT:text",
        "fast": "INPUT:checkbox",
        "sizes": "TEXTAREA:textarea",
    }
    assert (
        form.locator("[name=n]").input_value() == "4"
        and form.locator("[name=sizes]").input_value() == "[1, 2]"
    )
    assert form.locator("input[name=fast][type=checkbox]").is_checked()
    form.locator("[name=sizes]").fill('[1, "two"]')  # JSON, but not a list[int]: the -p parser says no
    form.locator("button[type=submit]").click()
    ada.wait_for_selector("#form-error")
    assert "sizes" in ada.locator("#form-error").inner_text()
    assert ada.locator("#launch-form [name=sizes]").input_value() == '[1, "two"]'
    shots.take(ada, "launch_refused")
    form = ada.locator("#launch-form")
    form.locator("[name=sizes]").fill("[3]")
    form.locator("[name=n]").fill("6")
    form.locator("[name=seconds]").fill("0.6")
    form.locator("input[name=fast][type=checkbox]").uncheck()
    form.locator("button[type=submit]").click()
    ada.wait_for_url(f"{server.url}/runs/*")
    run_id = ada.url.rsplit("/", 1)[1]
    assert ada.locator("#run-page").get_attribute("data-active") == "1"  # it was not over when the page came
    # turned green by the live updates, not by loading the page again: the page reloads itself
    # soon after the run ends, so an observer on this load notes it where the reload keeps it
    ada.evaluate(
        """() => new MutationObserver(() => {
            if (document.querySelectorAll('#run-dag a.box.st-succeeded').length === 3)
                sessionStorage.setItem('greenLive', '1');
        }).observe(document.body, {subtree: true, childList: true, attributes: true})"""
    )
    shots.take(ada, "run_live")
    assert until(ada, "() => sessionStorage.getItem('greenLive') === '1'", 90)
    shots.take(ada, "run_green")
    _, run = server.request("GET", f"/api/runs/{run_id}")
    assert run["deployment"] == "demo" and run["user"] == "ada"
    assert run["params"]["n"] == 6 and run["params"]["fast"] is False and run["params"]["sizes"] == [3]
    ada.wait_for_selector("#run-page[data-active='0']", timeout=30_000)  # then the page shows the outcome
    assert "train[0..5]" in ada.locator("#run-dag").inner_text()


def test_follow_a_running_nodes_log(ada, server, project, tokens, shots) -> None:  # type: ignore[no-untyped-def]
    run_id = submit(project, server, tokens["ada"], "talk.py", "lines=60", "pause=0.25")

    def running() -> bool:
        _, run = server.request("GET", f"/api/runs/{run_id}")
        return any(n["name"] == "chatty" and n["status"] == "running" for n in run.get("nodes", []))

    assert wait_for(running, timeout=60)
    ada.goto(f"{server.url}/runs/{run_id}/nodes/chatty")
    assert ada.locator("#log-following").count() == 1
    at_first = ada.locator("#log-live").text_content() or ""
    seen = [int(n) for n in re.findall(r"line (\d+)", at_first)]
    later = f"line {max(seen, default=10) + 2}"  # printed after the page was loaded
    assert until(ada, f"() => document.getElementById('log-live').textContent.includes({later!r})", 30)
    shots.take(ada, "node_log_following")
    live = ada.locator("#log-live").inner_text()
    assert "<" not in live and later in live and len(live) > len(at_first)  # it grew while we looked
    assert server.request("POST", f"/api/runs/{run_id}/cancel")[0] == 200
    assert finished(server, run_id)["status"] == "cancelled"


def test_cancel_a_run_from_its_page(ada, server, project, tokens, shots) -> None:  # type: ignore[no-untyped-def]
    run_id = submit(project, server, tokens["ada"], "p.py", "n=2", "seconds=60", "tag=to-cancel")
    assert wait_for(
        lambda: server.request("GET", f"/api/runs/{run_id}")[1]["status"] == "running", timeout=60
    )
    ada.goto(f"{server.url}/runs/{run_id}")
    ada.click("#cancel-button")
    ada.wait_for_selector("#run-summary .badge.st-cancelled", timeout=60_000)
    shots.take(ada, "run_cancelled")
    assert finished(server, run_id)["status"] == "cancelled"


def test_a_state_change_without_the_session_or_its_csrf_token_is_refused(
    browser, server, project, tokens
) -> None:  # type: ignore[no-untyped-def]
    run_id = submit(project, server, tokens["ada"], "p.py", "n=1", "seconds=60", "tag=csrf")
    assert wait_for(
        lambda: server.request("GET", f"/api/runs/{run_id}")[1]["status"] == "running", timeout=60
    )
    context, page = signed_in(browser, server, tokens["ada"])
    page.goto(f"{server.url}/runs/{run_id}")
    csrf = page.locator("#cancel-form input[name=csrf]").input_value()
    url = f"{server.url}/runs/{run_id}/cancel"
    assert context.request.post(url, form={}, max_redirects=0).status == 403  # no CSRF token
    assert context.request.post(url, form={"csrf": "0" * 64}, max_redirects=0).status == 403  # a wrong one
    api_cancel = f"{server.url}/api/runs/{run_id}/cancel"
    assert context.request.post(api_cancel).status == 403  # the API with the cookie alone
    bearer = browser.new_context()  # the right token and a bearer header, but no session cookie
    answer = bearer.request.post(
        url, form={"csrf": csrf}, headers={"Authorization": f"Bearer {tokens['ada']}"}, max_redirects=0
    )
    assert answer.status == 403
    bearer.close()
    bob, bob_page = signed_in(browser, server, tokens["bob"])  # a session of someone else: not the owner
    bob_page.goto(f"{server.url}/runs/{run_id}")
    assert bob_page.locator("#cancel-button").count() == 0
    bob_csrf = bob_page.locator("#relaunch input[name=csrf]").input_value()  # his own, from another form
    assert bob.request.post(url, form={"csrf": bob_csrf}, max_redirects=0).status == 403
    bob.close()
    _, run = server.request("GET", f"/api/runs/{run_id}")
    assert run["status"] == "running"  # nothing above changed it
    assert context.request.post(url, form={"csrf": csrf}, max_redirects=0).status == 303
    context.close()
    assert finished(server, run_id)["status"] == "cancelled"


# -- the drawing and the forms, without a browser ---------------------------------------------------------
def test_look_alike_nodes_fold_into_one_box_and_boxes_never_overlap() -> None:
    from scheduler.ui import dag
    from scheduler.ui.layout import BOX_W, layout

    leaves = [(f"leaf-{i}" if i else "leaf", "leaf", "task", []) for i in range(10_000)]
    nodes = [("load", "load", "task", []), *leaves, ("train", "train", "map", ["load"])]
    nodes.append(("total", "total", "task", [name for name, *_ in leaves] + ["train"]))
    shape = dag.fold(nodes)
    assert [box.kind for box in shape.boxes] == ["task", "group", "map", "task"]
    assert len(shape.boxes[1].members) == 10_000 and shape.index["leaf-9999"] == 1
    placed = layout(len(shape.boxes), shape.edges)
    spots = sorted(zip(placed.y, placed.x, strict=True))
    for (y1, x1), (y2, x2) in itertools.pairwise(spots):
        assert y1 != y2 or x2 - x1 >= BOX_W  # side by side in a layer, never on top of each other
    assert placed.y[3] > max(placed.y[:3])  # total below everything it reads


def test_a_launch_form_follows_the_annotations() -> None:
    from scheduler.ui import forms

    fields = forms.from_parameters(
        [
            {"name": "n", "type": "int", "default": 3},
            {"name": "lr", "type": "float", "default": 0.1},
            {"name": "fast", "type": "bool", "default": False},
            {"name": "data", "type": "Path", "default": "in.csv"},
            {"name": "sizes", "type": "list[int]", "default": [1, 2]},
            {"name": "opts", "type": "dict[str, float] | None", "default": None},
            {"name": "tag", "type": "str | None", "default": None},
        ]
    )
    assert [(f.name, f.widget, f.value) for f in fields] == [
        ("n", "number", "3"),
        ("lr", "number", "0.1"),
        ("fast", "checkbox", "False"),
        ("data", "text", "in.csv"),
        ("sizes", "json", "[1, 2]"),
        ("opts", "json", ""),
        ("tag", "text", ""),
    ]
    sent = forms.submitted(
        fields, {"n": "5", "lr": "", "fast": "true", "data": "x.csv", "sizes": "[3]", "tag": ""}
    )
    assert sent == {"n": "5", "fast": "true", "data": "x.csv", "sizes": "[3]"}  # blanks keep their defaults


def test_what_users_wrote_is_escaped_in_drawings() -> None:
    from scheduler.ui.charts import Series, line_chart

    drawn = str(line_chart("<b>loss</b>", [Series('<script>alert("x")</script>', [(0, 1.0), (1, 0.5)])]))
    assert "<script>" not in drawn and "<b>" not in drawn
    assert "&lt;script&gt;" in drawn and "&lt;b&gt;loss&lt;/b&gt;" in drawn
