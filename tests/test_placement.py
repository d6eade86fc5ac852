"""Hardware-aware placement without servers: what operators ask for (Resources, Distributed), what
hosts declare in flow.toml, why an executor refuses a request, and which failure a group reports."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from executors.base import TaskResult, TaskSpec
from executors.distributed import combine, consequent
from executors.inline import InlineExecutor
from executors.ssh_hosts import parse_hosts
from flowlib import Distributed, Resources
from flowlib.config import load
from flowlib.errors import ConfigError, WorkflowDefinitionError
from flowlib.resources import Machine, per_attempt, per_node, refusal


@pytest.mark.parametrize(
    "resources",
    [
        Resources(),
        Resources(cpus=0.5, gpus=2, memory="8GiB"),
        Resources(accelerator="a100"),
        Resources(gpus=1, accelerator="h100", labels=["big-mem", "fast-disk"]),
    ],
)
def test_resources_round_trip_through_json(resources: Resources) -> None:
    assert Resources.from_json(resources.to_json()) == resources


def test_resources_keep_their_old_shape_and_sort_labels() -> None:
    assert Resources().to_json() == {"cpus": 1, "gpus": 0, "memory": None}
    asked = Resources(labels=["z", "big-mem", "z"], accelerator="a100")
    assert asked.labels == ("big-mem", "z")
    assert asked.to_json() == {
        "cpus": 1,
        "gpus": 0,
        "memory": None,
        "accelerator": "a100",
        "labels": ["big-mem", "z"],
    }
    assert Resources(labels="big-mem").labels == ("big-mem",)
    for bad in ({"labels": [""]}, {"labels": [" x"]}, {"labels": [3]}, {"labels": 3}, {"accelerator": ""}):
        with pytest.raises(WorkflowDefinitionError):
            Resources(**bad)


def test_several_nodes_are_a_declaration_and_hold_their_resources_per_rank() -> None:
    group = Distributed(nprocs=2, nnodes=3)
    assert group.to_json() == {"nprocs": 2, "backend": "gloo", "nnodes": 3}
    with pytest.raises(WorkflowDefinitionError, match="nnodes"):
        Distributed(nnodes=0)
    rank = Resources(cpus=1, gpus=1, memory=100, labels=["x"])
    assert per_node(rank, group) == Resources(cpus=2, gpus=2, memory=200, labels=["x"])
    assert per_attempt(rank, group) == Resources(cpus=6, gpus=6, memory=600, labels=["x"])


def test_refusal_names_what_each_machine_lacks() -> None:
    hosts = [
        Machine("ssh host a", 4),
        Machine("ssh host b", 4, gpus=2, accelerators=frozenset({"a100"}), labels=frozenset({"big-mem"})),
    ]
    assert refusal(hosts, Resources(gpus=1, accelerator="A100"), None, "ssh hosts") is None
    assert refusal(hosts, Resources(), Distributed(nnodes=2), "ssh hosts") is None
    reason = refusal(hosts, Resources(labels=["big-mem"]), Distributed(nnodes=2), "ssh hosts")
    assert reason == (
        "asks for 1 CPUs, 0 GPUs, labels 'big-mem' on each of 2 ssh hosts, but 1 of 2 can "
        "(ssh host a: no label 'big-mem'; ssh host b: fits)"
    )
    reason = refusal(hosts, Resources(cpus=3), Distributed(nprocs=2), "ssh hosts")
    assert reason is not None and "ssh host a: 4 CPUs, not 6" in reason and "none can" in reason
    reason = refusal(hosts, Resources(gpus=1, accelerator="h100"), None, "ssh hosts")
    assert reason is not None and "no accelerator 'h100' (has a100)" in reason


def test_an_executor_on_one_machine_refuses_several_nodes_labels_and_too_much() -> None:
    executor = InlineExecutor()
    executor.start({})
    try:
        assert executor.refuses(Resources(), Distributed(nprocs=2)) is None
        reason = executor.refuses(Resources(), Distributed(nnodes=2))
        assert (
            reason is not None
            and "executor 'inline' runs on one machine" in reason
            and "'ssh' or 'ray'" in reason
        )
        reason = executor.refuses(Resources(accelerator="a100", labels=["big-mem"]), None)
        assert reason == (
            "asks for accelerator 'a100' and label 'big-mem', but executor 'inline' declares none; hosts "
            "declare them for executor 'ssh', nodes (as custom resources) for executor 'ray'"
        )
        capacity = executor.capacity()
        reason = executor.refuses(Resources(cpus=capacity.cpus + 1), None)
        assert reason is not None and f"has at most {capacity.cpus:g} CPUs" in reason
    finally:
        executor.shutdown()


FLOW_TOML = """
[executors.ssh]
hosts = ["worker@cpu-1", "cpu-2:2222"]
slots = 4

[[executors.ssh.host]]
address = "trainer@gpu-1:22"
labels = ["big-mem"]
gpu_type = "a100"
gpus = 2
slots = 8
"""


def test_hosts_declare_labels_and_accelerators_in_flow_toml(tmp_path: Path) -> None:
    (tmp_path / "flow.toml").write_text(FLOW_TOML)
    settings = load(tmp_path, environ={}).executor_settings("ssh")
    hosts = parse_hosts(settings, settings["slots"])
    assert [(h.label, h.user, h.slots, h.gpus, h.gpu_type, sorted(h.labels)) for h in hosts] == [
        ("cpu-1", "worker", 4, 0, None, []),
        ("cpu-2:2222", hosts[1].user, 4, 0, None, []),
        ("gpu-1", "trainer", 8, 2, "a100", ["big-mem"]),
    ]
    assert hosts[2].free_gpus == [0, 1]
    machines = [h.machine() for h in hosts]
    assert refusal(machines, Resources(gpus=2, accelerator="a100"), None, "ssh hosts") is None
    assert refusal(machines, Resources(gpus=1, accelerator="a100"), Distributed(nnodes=2), "ssh hosts")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"address": "h", "gpu": 1}, "unknown key 'gpu'"),
        ({"labels": ["x"]}, 'needs address = "user@host:port"'),
        ({"address": "h", "gpus": "2"}, "key 'gpus' must be int"),
        ({"address": "h", "gpus": -1}, "gpus must be >= 0"),
        ({"address": "cpu-1:22"}, "host cpu-1 is listed twice"),
    ],
)
def test_a_bad_host_table_is_a_configuration_error(table: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_hosts({"hosts": ["cpu-1"], "host": [table]}, 2)


def _spec() -> TaskSpec:
    from executors.base import OperatorRef

    return TaskSpec("t1", "r1", "train", 1, OperatorRef("p.py", "p", "train"), {})


def _failed(kind: str, message: str, at: float) -> TaskResult:
    result = TaskResult.failure("t1/node", kind, message)
    result.ended_at = at
    return result


PEER = "[pair.cc:553] Connection closed by peer [127.0.0.1]:20881. This is typically caused by a remote worker crashing."


def test_a_group_reports_the_error_a_rank_raised_not_its_peers_consequences() -> None:
    now = time.time()
    assert consequent({"type": "RuntimeError", "message": PEER}) and not consequent({"type": "ValueError"})
    peer = _failed("RuntimeError", f"rank 0 of 2: {PEER}", now)  # came first, but only because of the other
    own = _failed("ValueError", "rank 1 of 2: bad batch", now + 0.5)
    where = ["ssh host a", "ssh host b"]
    chosen = combine(_spec(), [peer, own], where, [], now)
    assert chosen.task_id == "t1" and chosen.error["message"] == "node 1 (ssh host b): rank 1 of 2: bad batch"
    lost = TaskResult.failure("t1", "HostDropped", "ssh host b dropped during the attempt")
    assert combine(_spec(), [peer, None], where, [lost], now).error["type"] == "HostDropped"
    assert combine(_spec(), [own, None], where, [lost], now).error["type"] == "ValueError"
    ok = TaskResult("t1/node0", True, outputs={"return": {"digest": "d"}}, log="zero\n")
    done = combine(_spec(), [ok, TaskResult("t1/node1", True, log="one\n")], where, [], now)
    assert done.ok and done.outputs == ok.outputs and done.host == "ssh host a, ssh host b"
    assert done.log == "--- node 0 (ssh host a) ---\nzero\n--- node 1 (ssh host b) ---\none\n"
