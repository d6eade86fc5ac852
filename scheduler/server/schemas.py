"""The JSON bodies of the server's API, as pydantic models (they make its OpenAPI document)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DIGEST = r"^[0-9a-f]{64}$"
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Submit(Strict):
    plan: dict[str, Any] = Field(description="A compiled plan (flowlib.plan.Plan.to_json())")
    snapshot: str = Field(pattern=DIGEST, description="Digest of the code snapshot uploaded first")
    priority: int = Field(0, ge=-1_000_000, le=1_000_000)
    executor: str | None = Field(
        None, max_length=100, description="Default executor for nodes that name none"
    )


class Resume(Strict):
    plan: dict[str, Any] | None = Field(None, description="The workflow compiled from the code as it is now")
    snapshot: str | None = Field(None, pattern=DIGEST)
    reuse_succeeded: bool = False


class ResumePlan(Strict):
    plan: dict[str, Any] | None = Field(None, description="The workflow compiled from the code as it is now")
    reuse_succeeded: bool = False


class ResumeStep(BaseModel):
    name: str
    action: str = Field(description="reuse or rerun")
    reasons: list[str]
    item_of: str | None = Field(None, description="The map this item belongs to")


class Parameter(Strict):
    name: str = Field(max_length=200)
    type: str = Field(max_length=500)
    default: Any = None
    required: bool = False


class Deploy(Strict):
    name: str = Field(pattern=NAME)
    workflow: str = Field(min_length=1, max_length=200)
    file: str = Field(min_length=1, max_length=1000)
    snapshot: str = Field(pattern=DIGEST)
    parameters: list[Parameter] = Field(default_factory=list, max_length=500)
    params: dict[str, Any] = Field(default_factory=dict)
    schedule: str | None = Field(None, max_length=200)


class Launch(Strict):
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Parameters by name: a string is parsed as -p parses it, any other JSON value "
        "as a params file's (5 for an int, [1, 2] for a list)",
    )


class Problem(BaseModel):
    error: str


class NodeObject(BaseModel):
    name: str
    operator: str
    status: str
    cached: bool
    attempts: int
    duration_s: float | None = None
    error: Any = None
    reasons: list[str] | None = None


class RunObject(BaseModel):
    run_id: str
    workflow: str
    status: str
    outputs: Any = None
    resumed_from: str | None = None
    error: str | None = None
    nodes: list[NodeObject] | None = None
    created_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    file: str | None = None
    params: dict[str, Any] | None = None
    user: str | None = None
    priority: int | None = None
    deployment: str | None = None
    deployment_version: int | None = None
    sweep: str | None = None
    trial: int | None = None


class Deployed(BaseModel):
    name: str
    version: int


class DeploymentObject(BaseModel):
    name: str
    version: int
    workflow: str
    schedule: str | None = None
    params: list[dict[str, Any]]


class SweepSummary(BaseModel):
    name: str
    workflow: str
    objective: str
    direction: str
    created_at: float


class SweepTrial(BaseModel):
    number: int
    run_id: str | None = None
    params: dict[str, Any]
    state: str  # complete | failed | pruned | running
    value: float | None = None
    error: str | None = None


class SweepBest(BaseModel):
    trial: int
    run_id: str | None = None
    params: dict[str, Any]
    value: float


class SweepStatus(BaseModel):
    name: str
    workflow: str
    objective: str
    direction: str
    trials: list[SweepTrial]
    best: SweepBest | None = None


class SweepCreate(Strict):
    """A sweep whose trials a client submits to this server (its study is kept here)."""

    name: str = Field(pattern=NAME)
    workflow: str = Field(min_length=1, max_length=200)
    file: str = Field(min_length=1, max_length=1000, description="The pipeline's path in the snapshots")
    objective: str = Field(min_length=1, max_length=200)
    direction: Literal["minimize", "maximize"] = "minimize"
    space: dict[str, str] = Field(min_length=1, max_length=100, description="NAME -> SPEC, as --space")
    distributions: dict[str, str] = Field(
        min_length=1, max_length=100, description="NAME -> Optuna's JSON of the distribution sampled"
    )
    grid: dict[str, list[Any]] | None = Field(
        None, max_length=100, description="NAME -> values, for --sampler grid"
    )
    params: dict[str, Any] = Field(default_factory=dict, description="The fixed parameters")
    trials: int = Field(20, ge=1, le=1_000_000)
    parallel: int = Field(1, ge=1, le=10_000)
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: Literal["none", "median"] = "none"
    seed: int | None = Field(None, ge=0, le=2**31)
    executor: str | None = Field(None, max_length=100)


class SweepRecordObject(BaseModel):
    name: str
    workflow: str
    file: str
    objective: str
    direction: str
    settings: dict[str, Any]


class AskedTrial(BaseModel):
    number: int
    params: dict[str, Any]


class TrialRun(Strict):
    plan: dict[str, Any] = Field(description="The trial's workflow, compiled with its parameters")
    snapshot: str = Field(pattern=DIGEST)


Step = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]


class TrialSteps(Strict):
    points: list[tuple[Step, float]] = Field(max_length=100_000, description="[step, value] pairs")


class Pruning(BaseModel):
    prune: bool


class TrialOutcome(Strict):
    state: Literal["complete", "failed", "pruned"]
    value: float | None = None
    error: str | None = Field(None, max_length=20_000)


class AttemptLog(BaseModel):
    node: str
    number: int
    status: str
    text: str
    origin: str | None = None


class Metric(BaseModel):
    node: str
    attempt: int
    name: str
    value: float
    step: int | None = None
    time: float
    from_run: str | None = None


class Why(BaseModel):
    node: str
    status: str
    summary: str
    differences: list[str]
    compared_with: str | None = None


class Health(BaseModel):
    status: str
    server: str | None = None


class Snapshot(BaseModel):
    digest: str
    size: int


class Done(BaseModel):
    run_id: str
    status: str
    message: str


# Every error the API answers is a JSON {"error": ...}; documented on every operation.
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "description": what}
    for code, what in (
        (400, "A request the server cannot carry out"),
        (401, "No valid token"),
        (403, "Not the run's owner nor an admin"),
        (404, "No such run, node, deployment or snapshot"),
        (409, "The run is still going"),
        (413, "Too large"),
        (422, "A malformed request"),
    )
}
