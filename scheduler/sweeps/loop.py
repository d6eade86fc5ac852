"""The sweep loop: ask the study (a Book) for trials, run each as a flowlib run through a Launcher
(at most `parallel` at once), report the objective's steps to the pruner, and tell the study how
each ended.

Steps that every trial shares (see trials.shared_nodes) are computed once: the first trial this
loop starts runs alone until those steps of it have ended and are committed, so the trials after
it find them in the cache instead of computing them side by side.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flowlib.errors import FlowError
from scheduler.sweeps.book import Asked, Book
from scheduler.sweeps.catalog import TrialRun
from scheduler.sweeps.launch import Ended, Launcher, Point
from scheduler.sweeps.trials import TrialPlans

POLL_S = 0.2  # how often the first trial's shared steps are checked while the others wait
STOP_WAIT_S = 30.0  # how long Ctrl-C waits for the cancelled trials to end


@dataclass
class Active:
    """A trial whose run goes on."""

    number: int
    params: dict[str, Any]
    last_step: int | None = None
    pruned_at: int | None = None


@dataclass
class SweepLoop:
    name: str
    book: Book
    plans: TrialPlans
    objective: str
    trials: int
    parallel: int
    launcher: Launcher
    shared: set[str]
    pruning: bool = False
    grid_points: int | None = None  # a grid sweep asks no more once every point was started
    report: Callable[[str], None] = lambda line: None
    active: dict[str, Active] = field(default_factory=dict)  # run id -> trial
    _gate: tuple[str, set[str]] | None = None  # (run id, its shared steps) while others wait for them
    _gated_once: bool = False
    _count: int = 0  # trials in the study, whatever their state
    _unfinished: list[tuple[Asked, TrialRun | None]] = field(default_factory=list)  # to resume first

    def run(self) -> None:
        """Run trials until the study holds `trials` of them and none is left running."""
        self._count = self.book.count()
        try:
            self._unfinished = self._left_running()
            while True:
                self._top_up()
                if not self.active:
                    return
                points: dict[str, list[Point]] = {}
                for item in self.launcher.wait(POLL_S):
                    if isinstance(item, Point):
                        points.setdefault(item.run_id, []).append(item)
                    else:
                        self._report(points)  # steps logged before it ended come first
                        self._ended(item)
                self._report(points)
                self._check_gate()
        except KeyboardInterrupt:
            self._stop("interrupted (Ctrl-C)")
            raise

    # -- starting trials ------------------------------------------------------------------------------
    def _top_up(self) -> None:
        """Start trials while fewer than `parallel` run: first those a killed sweep left unfinished."""
        while len(self.active) < self.parallel and self._gate is None:
            if self._unfinished:
                self._resume(self._unfinished.pop(0))
            elif self._count >= self.trials or (
                self.grid_points is not None and self.book.points_tried() >= self.grid_points
            ):
                return
            else:
                self._start_new()

    def _start_new(self) -> None:
        asked = self.book.ask()
        self._count += 1
        try:
            plan = self.plans.plan(asked.params)
            run_id = self.launcher.launch(plan, sweep=self.name, trial=asked.number)
        except FlowError as exc:
            self._failed(asked.number, asked.params, str(exc))
            return
        active = Active(asked.number, asked.params)
        self._started(active, run_id, plan_names={n.name for n in plan.nodes})

    def _started(self, active: Active, run_id: str, *, plan_names: set[str], resumed: bool = False) -> None:
        self.active[run_id] = active
        shown = _params(active.params)
        self.report(f"trial {active.number} {'resumed' if resumed else 'started'}: {shown} (run {run_id})")
        gated = self.shared & plan_names
        if self.parallel > 1 and gated and not self._gated_once:
            self._gated_once = True
            self._gate = (run_id, gated)

    def _left_running(self) -> list[tuple[Asked, TrialRun | None]]:
        """Trials a killed sweep left running, with their newest runs; those whose run ended are
        finished now from what it recorded, the others are returned, to resume."""
        unfinished = self.book.unfinished()
        if not unfinished:
            return []
        runs = self.launcher.trial_runs(self.name)
        left = []
        for asked in unfinished:
            run = runs.get(asked.number)
            if run is not None and run.status == "succeeded":
                self._finish_succeeded(asked.number, asked.params, run.run_id)
            elif run is not None and run.status == "failed":
                self._failed(asked.number, asked.params, f"its run {run.run_id} failed")
            else:
                left.append((asked, run))
        return left

    def _resume(self, unfinished: tuple[Asked, TrialRun | None]) -> None:
        """Resume a trial's interrupted run from its cached nodes (or start it, if it had none)."""
        asked, run = unfinished
        try:
            if run is None:
                plan = self.plans.plan(asked.params)
                run_id = self.launcher.launch(plan, sweep=self.name, trial=asked.number)
                names = {n.name for n in plan.nodes}
            else:
                run_id = self.launcher.resume(run.run_id, sweep=self.name, trial=asked.number)
                names = set(self.shared)
        except FlowError as exc:
            self._failed(asked.number, asked.params, str(exc))
            return
        active = Active(asked.number, asked.params)
        self._started(active, run_id, plan_names=names, resumed=run is not None)

    def _check_gate(self) -> None:
        if self._gate is None:
            return
        run_id, names = self._gate
        if run_id not in self.active or self.launcher.settled(run_id, names):
            self._gate = None

    # -- trials that ended -------------------------------------------------------------------------------
    def _ended(self, ended: Ended) -> None:
        active = self.active.pop(ended.run_id, None)
        if active is None:
            return
        if active.pruned_at is not None:  # also when its run ended before the cancel reached it
            self.book.prune(active.number)
            self.report(
                f"trial {active.number} pruned at step {active.pruned_at} (run {ended.run_id} {ended.status})"
            )
        elif ended.status == "succeeded":
            self._finish_succeeded(active.number, active.params, ended.run_id)
        else:
            self._failed(active.number, active.params, ended.error or f"its run ended {ended.status}")

    def _finish_succeeded(self, number: int, params: dict[str, Any], run_id: str) -> None:
        try:
            value = self.launcher.objective(run_id, self.objective)
        except FlowError as exc:
            self._failed(number, params, str(exc))
            return
        self.book.complete(number, value)
        self.report(f"trial {number} complete: {self.objective}={value:g} ({_params(params)})")

    def _failed(self, number: int, params: dict[str, Any], error: str) -> None:
        self.book.fail(number, error)  # shown by `flow sweep status`, also for a trial that never ran
        self.report(f"trial {number} failed: {error}")

    # -- pruning ----------------------------------------------------------------------------------------
    def _report(self, points: dict[str, list[Point]]) -> None:
        """Report the steps each running trial logged, and ask the pruner once per trial (it
        judges a trial by its latest step); stop those it condemns."""
        for run_id, found in list(points.items()):
            del points[run_id]
            active = self.active.get(run_id)
            if not self.pruning or active is None or active.pruned_at is not None:
                continue
            steps = [(point.step, point.value) for point in found]
            active.last_step = max([step for step, _ in steps] + [active.last_step or 0])
            if self.book.report(active.number, steps):
                active.pruned_at = active.last_step
                self.launcher.cancel(run_id, f"pruned by the sweep at step {active.pruned_at}")

    # -- stopping --------------------------------------------------------------------------------------
    def _stop(self, why: str) -> None:
        """Cancel the running trials and wait (a while) for their runs to end; their trials stay
        `running`, for `flow sweep resume`."""
        for run_id in self.active:
            self.launcher.cancel(run_id, why)
        deadline = time.monotonic() + STOP_WAIT_S
        while self.active and time.monotonic() < deadline:
            for item in self.launcher.wait(POLL_S):
                if isinstance(item, Ended):
                    self.active.pop(item.run_id, None)


def _params(params: Mapping[str, Any]) -> str:
    return ", ".join(
        f"{name}={value:g}" if isinstance(value, float) else f"{name}={value!r}"
        for name, value in params.items()
    )
