"""Dagster: the no-op fan-out and chain as ops in a job, run in-process on a SQLite instance.

The instance is DagsterInstance.local_temp on a fresh temp dir: run, event-log and
schedule storage in SQLite files there, persisting every step's events as flowlib
persists its nodes (telemetry off). Creating it is setup_s, outside wall_s.
wall_s covers building the job (as flowlib's times cover building its DAG) and
execute_in_process; build_s is the first part alone.

Fan-out is what a Dagster user writes for "the same op over n items": a source op
yielding n DynamicOutputs, .map(noop), .collect() into gather (n + 2 steps). Chain is
a static job of n aliased step ops, step_0 taking its input's default.
"""

from __future__ import annotations

import os
import tempfile

from .common import parse_args, report, timed


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    with tempfile.TemporaryDirectory(prefix="peer-dagster-") as home:
        os.environ["DAGSTER_HOME"] = home
        os.environ["DAGSTER_DISABLE_TELEMETRY"] = "1"
        import dagster
        from dagster import DagsterInstance, DynamicOut, DynamicOutput, job, op

        @op(config_schema=int, out=DynamicOut(int))
        def items(context):
            for i in range(context.op_config):
                yield DynamicOutput(i, mapping_key=str(i))

        @op
        def noop(i: int) -> int:
            return i

        @op
        def gather(values: list[int]) -> int:
            return sum(values)

        @op
        def step(value: int = 0) -> int:
            return value + 1

        def build_fan_out():
            @job(name="fan_out")
            def fan_out():
                gather(items().map(noop).collect())

            return fan_out, {"ops": {"items": {"config": args.n}}}

        def build_chain():
            @job(name="chain")
            def chain():
                value = step.alias("step_0")()
                for i in range(1, args.n):
                    value = step.alias(f"step_{i}")(value)

            return chain, None

        def run() -> tuple[int, float]:
            (definition, run_config), build_s = timed(
                build_fan_out if args.shape == "fan-out" else build_chain
            )
            outcome = definition.execute_in_process(run_config=run_config, instance=instance)
            last = "gather" if args.shape == "fan-out" else f"step_{args.n - 1}"
            return outcome.output_for_node(last), build_s

        instance, setup_s = timed(
            lambda: DagsterInstance.local_temp(home, overrides={"telemetry": {"enabled": False}})
        )
        storage = type(instance.run_storage).__name__
        (result, build_s), wall_s = timed(run)
        events = len(instance.get_records_for_run(instance.get_runs()[0].run_id, limit=1_000_000).records)
        instance.dispose()
        report(
            "dagster",
            args.shape,
            args.n,
            result,
            wall_s,
            dagster.__version__,
            setup_s=setup_s,
            build_s=build_s,
            storage=storage,
            events_persisted=events,
        )


if __name__ == "__main__":
    main()
