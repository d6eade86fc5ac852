"""A sweep's book of trials: what the sweep loop asks of its Optuna study.

`StudyBook` keeps it in an Optuna study this process opened (a local sweep, and a `flow server`
for the sweeps whose trials are submitted to it); `scheduler.sweeps.remote.RemoteBook` asks a
server for the same over its API. The loop sees only these methods, so it drives a sweep the
same way wherever its study lives.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from scheduler.sweeps import study as studies


@dataclass(frozen=True)
class Asked:
    """A trial the study proposed (or one a killed sweep left running)."""

    number: int
    params: dict[str, Any]


class Book(Protocol):
    def count(self) -> int:
        """Trials in the study, whatever their state."""

    def points_tried(self) -> int:
        """Distinct parameter sets among them (a grid is done once it tried every point)."""

    def ask(self) -> Asked:
        """A new trial."""

    def unfinished(self) -> list[Asked]:
        """Trials still `running` (left so by a killed sweep), oldest first."""

    def report(self, number: int, points: Iterable[tuple[int, float]]) -> bool:
        """Report steps (step, value) of a running trial's objective; return whether the
        pruner stops it. Steps reported before, and values that are not finite, are skipped."""

    def complete(self, number: int, value: float) -> None: ...

    def fail(self, number: int, error: str) -> None: ...

    def prune(self, number: int) -> None: ...


class StudyBook:
    """A book kept in an Optuna study (`distributions`: name -> the Optuna distribution sampled).
    Safe to share between threads (a server's request handlers)."""

    def __init__(self, study: Any, distributions: Mapping[str, Any]) -> None:
        self.study, self.distributions = study, dict(distributions)
        self._live: dict[int, Any] = {}  # trial number -> optuna.trial.Trial
        self._reported: dict[int, set[int]] = {}
        self._lock = threading.Lock()

    def count(self) -> int:
        return len(self.study.get_trials(deepcopy=False))

    def points_tried(self) -> int:
        trials = self.study.get_trials(deepcopy=False)
        return len({tuple(sorted(t.params.items())) for t in trials if t.params})

    def ask(self) -> Asked:
        with self._lock:
            trial = self.study.ask(self.distributions)
            self._live[trial.number] = trial
            self._reported[trial.number] = set()
            return Asked(trial.number, dict(trial.params))

    def unfinished(self) -> list[Asked]:
        from optuna.trial import TrialState

        found = []
        with self._lock:
            for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                self._remember(frozen)
                found.append(Asked(frozen.number, dict(frozen.params)))
        return sorted(found, key=lambda asked: asked.number)

    def report(self, number: int, points: Iterable[tuple[int, float]]) -> bool:
        with self._lock:
            trial = self._trial(number)
            reported = self._reported[number]
            fresh = False
            for step, value in points:
                if step < 0 or step in reported or not math.isfinite(value):
                    continue
                trial.report(value, step)
                reported.add(step)
                fresh = True
            return fresh and trial.should_prune()

    def complete(self, number: int, value: float) -> None:
        self._tell(number, value=value)

    def fail(self, number: int, error: str) -> None:
        with self._lock:
            self._trial(number).set_user_attr("error", error)  # `flow sweep status` shows it
        self._tell(number, state="failed")

    def prune(self, number: int) -> None:
        self._tell(number, state="pruned")

    def _tell(self, number: int, *, value: float | None = None, state: str = "complete") -> None:
        with self._lock:
            self._trial(number)  # a number the study does not have is a KeyError here
            studies.tell(self.study, number, value=value, state=state)
            self._live.pop(number, None)
            self._reported.pop(number, None)

    def _trial(self, number: int) -> Any:
        """The live trial `number` (one asked by another process is looked up in the study)."""
        if number not in self._live:
            for frozen in self.study.get_trials(deepcopy=False):
                if frozen.number == number:
                    self._remember(frozen)
                    break
            else:
                raise KeyError(f"the sweep has no trial {number}")
        return self._live[number]

    def _remember(self, frozen: Any) -> None:
        if frozen.number not in self._live:
            self._live[frozen.number] = studies.live_trial(self.study, frozen)
            self._reported[frozen.number] = set(frozen.intermediate_values)
