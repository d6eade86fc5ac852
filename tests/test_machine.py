"""The run state machine, alone: plans written by hand, a fake cache, a fake clock, and the test
playing the executor. No process, thread or database; each test takes milliseconds."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from executors.base import Event, TaskResult
from flowlib.hashing import hash_labelled, literal_digest, node_key, tuple_digest
from flowlib.plan import ContainerInput, LiteralInput, OperatorSpec, Plan, PlanNode, RefInput
from flowlib.store import ArtifactRef, pack_manifest
from scheduler.engine.machine import CancelTask, RunMachine, Submit
from scheduler.engine.resume import plan_resume, reuse_of


def op(name: str, **options: Any) -> OperatorSpec:
    return OperatorSpec(
        qualname=name,
        module="m",
        file="m.py",
        pickled=None,
        fingerprint=hashlib.sha256(name.encode()).hexdigest(),
        fingerprint_parts={"qualname": name},
        **options,
    )


def lit(value: Any) -> LiteralInput:
    return LiteralInput(literal_digest(value), value)


def ref(node: str, output: str = "return", index: int | None = None) -> RefInput:
    return RefInput(node, output, index)


def node(name: str, op_name: str, **inputs: Any) -> PlanNode:
    return PlanNode(name, op_name, inputs)


def plan(ops: list[OperatorSpec], *nodes: PlanNode) -> Plan:
    return Plan("wf", "p.py", "p", "/project", {}, {o.qualname: o for o in ops}, tuple(nodes))


def artifact(value: Any) -> dict[str, Any]:
    data = json.dumps(value).encode()
    return ArtifactRef(hashlib.sha256(data).hexdigest(), "json", 2, len(data)).to_json()


def listed(values: list[Any]) -> dict[str, Any]:
    """A split list output as a worker reports it: a manifest ref listing its elements."""
    elements = [artifact(v) for v in values]
    manifest, _ = pack_manifest([ArtifactRef.from_json(e) for e in elements])
    return {**manifest.to_json(), "elements": elements}


class FakeLookups:
    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}
        self.broken: set[str] = set()  # digests that fail their check
        self.manifests: dict[str, list[dict[str, Any]]] = {}
        self.asked: list[list[str]] = []

    def cached(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        self.asked.append(list(keys))
        return {
            k: {"outputs": self.entries[k], "run_id": "old", "node": "n"} for k in keys if k in self.entries
        }

    def problem(self, outputs: dict[str, Any]) -> str | None:
        bad = [r["digest"] for r in outputs.values() if r["digest"] in self.broken]
        return f"artifact {bad[0][:12]} is corrupt or missing" if bad else None

    def elements(self, ref: dict[str, Any]) -> list[dict[str, Any]]:
        return self.manifests[ref["digest"]]


class Sim:
    """Plays the driver and the executor around one machine."""

    def __init__(self, the_plan: Plan, **options: Any) -> None:
        self.lookups = options.pop("lookups", None) or FakeLookups()
        self.machine = RunMachine(the_plan, run_id="r", lookups=self.lookups, **options)
        self.now = 100.0
        self.submitted: dict[str, Submit] = {}  # node -> its latest Submit
        self.cancelled: list[str] = []

    def step(self) -> list[str]:
        """Advance; return the nodes submitted in this step."""
        self.machine.advance(self.now)
        return self._take()

    def _take(self) -> list[str]:
        names = []
        for command in self.machine.take_commands():
            if isinstance(command, Submit):
                self.submitted[command.node] = command
                names.append(command.node)
            else:
                assert isinstance(command, CancelTask)
                self.cancelled.append(command.task_id)
        return names

    def finish(
        self,
        name: str,
        value: Any = None,
        *,
        outputs: dict[str, Any] | None = None,
        error: dict | None = None,
    ) -> list[str]:
        submit = self.submitted[name]
        ok = error is None
        result = TaskResult(
            submit.task_id,
            ok,
            outputs=(outputs if outputs is not None else {"return": artifact(value)}) if ok else {},
            error=error,
            started_at=self.now,
            ended_at=self.now + 0.5,
        )
        self.machine.on_result(submit.task_id, result, self.now + 0.5)
        self._take()
        return self.step()

    def status(self, name: str) -> str:
        return self.machine.states[name].status.value

    def rows(self) -> dict[str, dict[str, Any]]:
        return self.machine.writes.nodes


def boom(kind: str = "ValueError", message: str = "boom") -> dict[str, Any]:
    return {"type": kind, "message": message, "traceback": None}


# -- the basics ----------------------------------------------------------------------------------------


def test_a_chain_runs_in_order_and_a_success_is_committed_before_its_dependant_starts() -> None:
    sim = Sim(plan([op("a"), op("b")], node("a", "a", x=lit(1)), node("b", "b", y=ref("a"))))
    assert sim.step() == ["a"]
    assert sim.status("a") == "queued" and sim.status("b") == "pending"
    assert sim.finish("a", 2) == ["b"]
    assert sim.machine.writes.urgent  # b may start only once a's success is committed
    assert sim.submitted["b"].inputs == {"y": {"ref": artifact(2)}}
    sim.finish("b", 3)
    assert sim.machine.done and sim.machine.outcome() == ("succeeded", None)
    assert sim.rows()["b"]["status"] == "succeeded" and sim.rows()["b"]["duration_s"] == 0.5


def test_a_node_is_queued_until_its_worker_starts_it_then_running() -> None:
    sim = Sim(plan([op("a")], node("a", "a", x=lit(1))))
    sim.step()
    task = sim.submitted["a"].task_id
    sim.machine.on_event(task, Event(task, "started", {"time": 150.0}), 151.0)
    assert sim.status("a") == "running" and sim.rows()["a"]["started_at"] == 150.0


def test_a_quick_attempt_that_never_said_started_still_records_its_start() -> None:
    sim = Sim(plan([op("a")], node("a", "a", x=lit(1))))
    sim.step()
    sim.finish("a", 1)
    changes = [status for name, status, _ in sim.machine.writes.changes if name == "a"]
    assert changes == ["queued", "running", "succeeded"]


def test_retries_wait_out_an_exponential_delay_and_say_so() -> None:
    sim = Sim(plan([op("a", retries=2, retry_delay=1.0)], node("a", "a", x=lit(1))))
    sim.step()
    sim.finish("a", error=boom())
    assert sim.status("a") == "queued" and sim.machine.next_deadline() is not None
    delay = sim.machine.next_deadline() - sim.now
    assert 1.0 <= delay - 0.5 <= 1.25  # retry_delay * 2**0 * (1 + jitter), counted from the result
    notices = [n for n in sim.machine.take_notices() if n[1] == "retrying"]
    assert notices and notices[0][2]["attempt"] == 2 and notices[0][2]["of"] == 3
    sim.machine.on_tick(sim.now + 1.0)
    assert sim._take() == []  # not yet
    sim.machine.on_tick(sim.now + 2.0)
    assert sim._take() == ["a"] and sim.submitted["a"].attempt == 2
    sim.finish("a", error=boom())
    sim.machine.on_tick(sim.now + 10.0)
    assert sim._take() == ["a"] and sim.submitted["a"].attempt == 3
    sim.finish("a", error=boom(message="third"))
    assert sim.status("a") == "failed" and sim.rows()["a"]["attempts"] == 3
    assert sim.machine.outcome() == ("failed", "node 'a' failed: ValueError: third")


def test_a_timeout_is_retried_and_a_cancel_is_not() -> None:
    sim = Sim(
        plan([op("a", retries=1), op("b", retries=1)], node("a", "a", x=lit(1)), node("b", "b", x=lit(2)))
    )
    sim.step()
    sim.finish("a", error=boom("Timeout", "timed out after 1 s"))
    sim.finish("b", error=boom("Cancelled", "stopped"))
    assert sim.status("a") == "queued" and sim.status("b") == "failed"


def test_a_failure_fails_its_dependants_and_independent_branches_go_on() -> None:
    sim = Sim(
        plan(
            [op("a"), op("b"), op("c")],
            node("a", "a", x=lit(1)),
            node("b", "b", y=ref("a")),
            node("c", "c", x=lit(2)),
        )
    )
    assert sorted(sim.step()) == ["a", "c"]
    sim.finish("a", error=boom())
    assert sim.status("b") == "upstream_failed"
    assert sim.rows()["b"]["error"]["message"] == "upstream node 'a' failed"
    sim.finish("c", 5)
    assert sim.status("c") == "succeeded"
    assert sim.machine.outcome() == ("failed", "node 'a' failed: ValueError: boom")


def test_fail_fast_stops_everything_else_and_the_run_fails() -> None:
    sim = Sim(plan([op("a"), op("c")], node("a", "a", x=lit(1)), node("c", "c", x=lit(2))), fail_fast=True)
    sim.step()
    sim.finish("a", error=boom())
    assert sim.status("c") == "cancelled" and sim.cancelled == [sim.submitted["c"].task_id]
    assert sim.machine.done and sim.machine.outcome()[0] == "failed"


def test_cancel_stops_running_attempts_and_ends_the_run_cancelled() -> None:
    sim = Sim(plan([op("a"), op("b")], node("a", "a", x=lit(1)), node("b", "b", y=ref("a"))))
    sim.step()
    sim.machine.cancel("by the user", sim.now)
    sim._take()
    assert sim.cancelled == [sim.submitted["a"].task_id]
    assert sim.status("a") == "cancelled" and sim.status("b") == "cancelled"
    assert sim.machine.done and sim.machine.outcome() == ("cancelled", "cancelled: by the user")
    # a result that arrives after the cancel changes nothing
    sim.finish("a", 1)
    assert sim.status("a") == "cancelled"


def test_an_internal_error_leaves_nothing_running() -> None:
    sim = Sim(plan([op("a")], node("a", "a", x=lit(1))))
    sim.step()
    sim.machine.abort("KeyError: 'x'", sim.now)
    assert sim.status("a") == "cancelled" and sim.machine.done
    assert sim.machine.outcome() == ("failed", "internal error: KeyError: 'x'")


# -- the cache -----------------------------------------------------------------------------------------


def test_a_cache_hit_completes_without_running_and_feeds_its_dependants() -> None:
    a, b = op("a"), op("b")
    the_plan = plan([a, b], node("a", "a", x=lit(1)), node("b", "b", y=ref("a")))
    sim = Sim(the_plan)
    sim.lookups.entries[node_key(a.fingerprint, {"x": literal_digest(1)})] = {"return": artifact(7)}
    assert sim.step() == ["b"]
    assert sim.status("a") == "cached" and sim.rows()["a"]["attempts"] == 0
    assert sim.submitted["b"].inputs["y"] == {"ref": artifact(7)}


def test_an_unusable_cache_entry_is_recomputed_and_noted() -> None:
    a = op("a")
    sim = Sim(plan([a], node("a", "a", x=lit(1))))
    entry = artifact(7)
    sim.lookups.entries[node_key(a.fingerprint, {"x": literal_digest(1)})] = {"return": entry}
    sim.lookups.broken.add(entry["digest"])
    assert sim.step() == ["a"]
    assert sim.machine.states["a"].reasons[0].startswith("cache entry not used: artifact")


def test_no_cache_and_cache_false_never_ask_the_cache() -> None:
    a = op("a", cache=False)
    sim = Sim(plan([a, op("b")], node("a", "a", x=lit(1)), node("b", "b", x=lit(1))), use_cache=False)
    assert sorted(sim.step()) == ["a", "b"] and sim.lookups.asked == []


def test_nodes_with_one_key_are_computed_once_in_a_run() -> None:
    gen = op("gen")
    sim = Sim(plan([gen], *(node(f"gen{i}", "gen", seed=lit(0)) for i in range(3))))
    assert sim.step() == ["gen0"]
    assert all(sim.status(f"gen{i}") == "queued" for i in range(3))
    sim.finish("gen0", [1, 2])
    for i in (1, 2):
        assert sim.status(f"gen{i}") == "cached"
        assert sim.machine.states[f"gen{i}"].outputs["return"]["digest"] == artifact([1, 2])["digest"]
        assert "same computation as node 'gen0'" in sim.machine.states[f"gen{i}"].reasons[0]
    assert [row["node"] for row in sim.machine.writes.rows["cache"]] == ["gen0"]


def test_a_failed_shared_computation_fails_the_nodes_waiting_for_it() -> None:
    sim = Sim(plan([op("gen")], node("g1", "gen", seed=lit(0)), node("g2", "gen", seed=lit(0))))
    sim.step()
    sim.finish("g1", error=boom())
    assert (
        sim.status("g2") == "failed"
        and "same computation (node 'g1') failed" in sim.rows()["g2"]["error"]["message"]
    )


def test_operators_with_cache_false_are_computed_every_time() -> None:
    gen = op("gen", cache=False)
    sim = Sim(plan([gen], node("g1", "gen", seed=lit(0)), node("g2", "gen", seed=lit(0))))
    assert sorted(sim.step()) == ["g1", "g2"]


# -- inputs --------------------------------------------------------------------------------------------


def test_a_container_of_futures_is_one_input_whose_digest_is_its_elements() -> None:
    leaf, total = op("leaf"), op("total")
    items = ContainerInput("list", (ref("l0"), ref("l1"), lit(5)))
    sim = Sim(
        plan(
            [leaf, total],
            node("l0", "leaf", i=lit(0)),
            node("l1", "leaf", i=lit(1)),
            node("t", "total", xs=items),
        )
    )
    sim.step()
    sim.finish("l0", 10)
    assert sim.finish("l1", 11) == ["t"]
    spec = sim.submitted["t"].inputs["xs"]
    assert spec == {"list": [{"ref": artifact(10)}, {"ref": artifact(11)}, {"literal": 5}]}
    digests = [artifact(10)["digest"], artifact(11)["digest"], literal_digest(5)]
    assert sim.machine.states["t"].input_digests["xs"] == hash_labelled(["list", digests])


def test_a_whole_multi_output_result_is_passed_on_by_fields() -> None:
    split = op("split", fields=("train", "test"), cls=("m", "Split"))
    the_plan = plan([split, op("use")], node("s", "split", x=lit(1)), node("u", "use", s=ref("s")))
    sim = Sim(the_plan)
    sim.step()
    outputs = {"train": artifact([1]), "test": artifact([2])}
    sim.finish("s", outputs=outputs)
    spec = sim.submitted["u"].inputs["s"]
    assert spec == {"fields": outputs, "cls": ["m", "Split"]}
    assert sim.machine.states["u"].input_digests["s"] == tuple_digest(
        [outputs["train"]["digest"], outputs["test"]["digest"]]
    )


# -- maps ----------------------------------------------------------------------------------------------


def test_a_map_over_a_literal_list_expands_runs_each_item_and_gathers() -> None:
    sq = op("sq")
    the_plan = plan([sq], PlanNode("sq", "sq", {}, kind="map", map_param="x", items=(lit(1), lit(2))))
    sim = Sim(the_plan)
    assert sim.step() == ["sq[0]", "sq[1]"]
    assert [row["name"] for row in sim.machine.writes.new_nodes] == ["sq[0]", "sq[1]"]
    sim.finish("sq[0]", 1)
    sim.finish("sq[1]", 4)
    gathered = sim.machine.states["sq"].outputs["return"]
    assert gathered["serializer"] == "manifest" and [e["digest"] for e in gathered["elements"]] == [
        artifact(1)["digest"],
        artifact(4)["digest"],
    ]
    assert sim.machine.outcome() == ("succeeded", None)


def test_a_map_over_a_future_expands_from_its_elements_when_it_resolves() -> None:
    src, sq = op("src"), op("sq")
    the_plan = plan(
        [src, sq],
        PlanNode("src", "src", {"n": lit(3)}, split=("return",)),
        PlanNode("sq", "sq", {"x": ref("src"), "k": lit(2)}, kind="map", map_param="x"),
    )
    sim = Sim(the_plan)
    sim.step()
    assert sim.finish("src", outputs={"return": listed([5, 6, 7])}) == ["sq[0]", "sq[1]", "sq[2]"]
    assert sim.submitted["sq[2]"].inputs == {"x": {"ref": artifact(7)}, "k": {"literal": 2}}
    assert sim.machine.states["sq[2]"].input_digests["x"] == artifact(7)["digest"]


def test_a_map_over_a_cached_list_asks_for_its_elements() -> None:
    src, sq = op("src"), op("sq")
    the_plan = plan(
        [src, sq],
        PlanNode("src", "src", {"n": lit(2)}, split=("return",)),
        PlanNode("sq", "sq", {"x": ref("src")}, kind="map", map_param="x"),
    )
    sim = Sim(the_plan)
    whole = listed([1, 2])
    elements = whole.pop("elements")
    sim.lookups.entries[node_key(src.fingerprint, {"n": literal_digest(2)})] = {"return": whole}
    sim.lookups.manifests[whole["digest"]] = elements
    assert sim.step() == ["sq[0]", "sq[1]"]


def test_a_map_of_a_multi_output_operator_gathers_one_list_per_output() -> None:
    pair, use = op("pair", fields=("a", "b"), cls=None), op("use")
    the_plan = plan(
        [pair, use],
        PlanNode("pair", "pair", {}, kind="map", map_param="x", items=(lit(1), lit(2))),
        node("whole", "use", rows=ref("pair")),
        node("col", "use", values=ref("pair", "b")),
    )
    sim = Sim(the_plan)
    sim.step()
    sim.finish("pair[0]", outputs={"a": artifact(1), "b": artifact(10)})
    sim.finish("pair[1]", outputs={"a": artifact(2), "b": artifact(20)})
    gathered = sim.machine.states["pair"].outputs
    assert set(gathered) == {"a", "b"} and all(o["serializer"] == "manifest" for o in gathered.values())
    assert sim.submitted["col"].inputs["values"] == {"ref": {k: gathered["b"][k] for k in artifact(1)}}
    rows = sim.submitted["whole"].inputs["rows"]["list"]
    assert rows == [
        {"fields": {"a": artifact(1), "b": artifact(10)}, "cls": None},
        {"fields": {"a": artifact(2), "b": artifact(20)}, "cls": None},
    ]


def test_a_failed_item_fails_the_map_and_what_follows() -> None:
    sq, after = op("sq"), op("after")
    the_plan = plan(
        [sq, after],
        PlanNode("sq", "sq", {}, kind="map", map_param="x", items=(lit(1), lit(2))),
        node("after", "after", xs=ref("sq")),
    )
    sim = Sim(the_plan)
    sim.step()
    sim.finish("sq[0]", error=boom())
    assert sim.status("sq") == "upstream_failed" and sim.status("after") == "upstream_failed"
    sim.finish("sq[1]", 4)
    assert sim.status("sq[1]") == "succeeded" and sim.machine.outcome()[0] == "failed"


# -- resume ----------------------------------------------------------------------------------------------


def _old(
    status: str, fingerprint: str | None, inputs: dict | None, outputs: dict | None, **extra: Any
) -> dict:
    return {
        "status": status,
        "attempts": 1,
        "fingerprint": fingerprint,
        "inputs": inputs,
        "outputs": outputs,
        "cache_key": None,
        **extra,
    }


def test_resume_reuses_what_succeeded_and_reruns_the_rest_with_reasons() -> None:
    a, b, c = op("a"), op("b"), op("c")
    the_plan = plan([a, b, c], node("a", "a", x=lit(1)), node("b", "b", y=ref("a")), node("c", "c", x=lit(2)))
    old = {
        "a": _old("succeeded", a.fingerprint, {"x": literal_digest(1)}, {"return": artifact(1)}),
        "b": _old("failed", b.fingerprint, {"y": artifact(1)["digest"]}, None),
        "c": _old("running", c.fingerprint, {"x": literal_digest(2)}, None),
    }
    steps = {s.name: (s.action, s.reasons) for s in plan_resume(the_plan, old, {}, FakeLookups())}
    assert steps == {
        "a": ("reuse", ["succeeded before"]),
        "b": ("rerun", ["failed"]),
        "c": ("rerun", ["interrupted"]),
    }


def test_resume_reruns_changed_code_downstream_and_reuse_succeeded_keeps_it() -> None:
    a, b = op("a"), op("b")
    the_plan = plan([a, b], node("a", "a", x=lit(1)), node("b", "b", y=ref("a")))
    old_fp = "0" * 64
    old = {
        "a": _old("succeeded", old_fp, {"x": literal_digest(1)}, {"return": artifact(1)}),
        "b": _old("failed", b.fingerprint, {"y": artifact(1)["digest"]}, None),
    }
    parts = {old_fp: {"qualname": "a", "source_hash": "old", "digest": old_fp}}
    plain = {s.name: s for s in plan_resume(the_plan, old, parts, FakeLookups())}
    assert plain["a"].action == "rerun" and "code changed: a" in plain["a"].reasons
    assert plain["b"].reasons == ["failed", "upstream reruns"]
    kept = {s.name: s for s in plan_resume(the_plan, old, parts, FakeLookups(), reuse_succeeded=True)}
    assert kept["a"].action == "reuse" and kept["a"].reasons[-1].endswith("(--reuse-succeeded)")
    assert kept["b"].reasons == ["failed"]


def test_resume_plans_the_items_of_a_partly_finished_map_one_by_one() -> None:
    sq = op("sq")
    the_plan = plan([sq], PlanNode("sq", "sq", {}, kind="map", map_param="x", items=(lit(1), lit(2), lit(3))))
    old = {
        "sq[0]": _old("succeeded", sq.fingerprint, {"x": literal_digest(1)}, {"return": artifact(1)}),
        "sq[1]": _old("succeeded", sq.fingerprint, {"x": literal_digest(2)}, {"return": artifact(4)}),
        "sq[2]": _old("failed", sq.fingerprint, {"x": literal_digest(3)}, None),
        "sq": _old("upstream_failed", None, None, None),
    }
    steps = plan_resume(the_plan, old, {}, FakeLookups())
    assert [(s.name, s.action) for s in steps] == [
        ("sq[0]", "reuse"),
        ("sq[1]", "reuse"),
        ("sq[2]", "rerun"),
        ("sq", "rerun"),
    ]
    assert steps[-1].reasons == ["1 of 3 items rerun"]
    sim = Sim(the_plan, reuse=reuse_of(steps))
    assert sim.step() == ["sq[2]"]  # the resumed run runs only the failed item
    assert sim.status("sq[0]") == "cached"


@pytest.mark.parametrize("problem", [False, True])
def test_a_reused_node_whose_artifact_is_gone_is_recomputed(problem: bool) -> None:
    a = op("a")
    the_plan = plan([a], node("a", "a", x=lit(1)))
    entry = artifact(1)
    sim = Sim(
        the_plan,
        reuse={
            "a": {"outputs": {"return": entry}, "cache_key": "k", "fingerprint": a.fingerprint, "inputs": {}}
        },
    )
    if problem:
        sim.lookups.broken.add(entry["digest"])
    submitted = sim.step()
    assert submitted == (["a"] if problem else [])
    assert sim.status("a") == ("queued" if problem else "cached")


# -- the plan ----------------------------------------------------------------------------------------------


def test_a_hand_written_plan_round_trips_through_json_exactly() -> None:
    split = op("split", fields=("a", "b"), cls=("m", "S"), retries=2, timeout=3.0)
    the_plan = plan(
        [split],
        PlanNode(
            "s",
            "split",
            {"x": lit([1, {"k": None}]), "p": LiteralInput("d" * 64, pickled="AAA=")},
            site="p.py:3",
        ),
        PlanNode(
            "m",
            "split",
            {"y": ref("s", "a"), "c": ContainerInput("dict", (ref("s", "b"),), (lit(1),))},
            kind="map",
            map_param="y",
        ),
    )
    again = Plan.loads(the_plan.dumps())
    assert again == the_plan and again.dumps() == the_plan.dumps()


def test_a_map_over_an_unchanged_list_is_answered_whole_from_the_cache() -> None:
    sq = op("sq")
    the_plan = plan(
        [sq], PlanNode("sq", "sq", {"k": lit(2)}, kind="map", map_param="x", items=(lit(1), lit(2)))
    )
    first = Sim(the_plan)
    first.step()
    first.finish("sq[0]", 1)
    first.finish("sq[1]", 4)
    entry = next(row for row in first.machine.writes.rows["cache"] if row["node"] == "sq")
    again = Sim(the_plan)
    again.lookups.entries[entry["key"]] = entry["outputs"]
    assert again.step() == []  # nothing to run, nothing expanded
    assert again.status("sq") == "cached" and again.machine.writes.new_nodes == []
    grown = Sim(
        plan(
            [sq],
            PlanNode("sq", "sq", {"k": lit(2)}, kind="map", map_param="x", items=(lit(1), lit(2), lit(3))),
        )
    )
    grown.lookups.entries[entry["key"]] = entry["outputs"]
    assert grown.step() == [
        "sq[0]",
        "sq[1]",
        "sq[2]",
    ]  # another list: another map key (its items hit one by one)
