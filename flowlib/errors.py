"""The error hierarchy: every error flowlib raises on purpose derives from FlowError."""

from __future__ import annotations


class FlowError(Exception):
    """Base of every flowlib error; the CLI prints it as one line and exits 2."""

    exit_code = 2


class WorkflowDefinitionError(FlowError):
    """An operator or workflow is defined or composed wrongly."""


class FlowTypeError(FlowError, TypeError):
    """A value does not fit the annotation of the parameter it is given to."""


class OperatorReturnTypeError(FlowError, TypeError):
    """An operator returned a value that does not fit its return annotation."""


class ConfigError(FlowError):
    """A configuration file, environment variable or flag is wrong."""


class ParameterError(FlowError):
    """A workflow parameter is unknown, missing or cannot be parsed."""


class PipelineLoadError(FlowError):
    """A pipeline file cannot be loaded (syntax error, import error, no workflow)."""


class RunNotFound(FlowError):
    """No run (or no node of a run) has that name in the database."""


class StoreFull(FlowError, OSError):
    """The artifact store's disk is full: nothing was written (no half artifact stays)."""


class RunInterrupted(FlowError):
    """The scheduler stopped a run it could no longer record (the database stayed away); the run
    reads `interrupted` and `flow resume` continues it."""

    exit_code = 130


class RunFailed(FlowError):
    """A run ended failed or cancelled; carries the RunResult."""

    exit_code = 1

    def __init__(self, message: str, result: object | None = None) -> None:
        super().__init__(message)
        self.result = result
