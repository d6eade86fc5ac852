"""Luigi: the no-op fan-out and chain as Tasks with requires()/output() to local files.

Every task writes its value to a LocalTarget in a fresh temp dir (Luigi's own way of
persisting: a task is done when its output exists) and reads its inputs from there.
luigi.build(..., local_scheduler=True, workers=2): with more than one worker Luigi
runs each task in a forked process. wall_s covers the build call, which also
instantiates the task graph and checks every output; there is no setup outside it.
"""

from __future__ import annotations

import tempfile

from .common import parse_args, report, timed


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    with tempfile.TemporaryDirectory(prefix="peer-luigi-") as root:
        import luigi

        def target(name: str) -> luigi.LocalTarget:
            return luigi.LocalTarget(f"{root}/{name}")

        def read(t: luigi.LocalTarget) -> int:
            with t.open("r") as f:
                return int(f.read())

        def write(t: luigi.LocalTarget, value: int) -> None:
            with t.open("w") as f:
                f.write(str(value))

        class Noop(luigi.Task):
            i = luigi.IntParameter()

            def output(self):
                return target(f"noop_{self.i}")

            def run(self):
                write(self.output(), self.i)

        class Gather(luigi.Task):
            n = luigi.IntParameter()

            def requires(self):
                return [Noop(i=i) for i in range(self.n)]

            def output(self):
                return target("gather")

            def run(self):
                write(self.output(), sum(read(t) for t in self.input()))

        class Step(luigi.Task):
            i = luigi.IntParameter()

            def requires(self):
                return Step(i=self.i - 1) if self.i > 0 else []

            def output(self):
                return target(f"step_{self.i}")

            def run(self):
                write(self.output(), (read(self.input()) if self.i > 0 else 0) + 1)

        final = Gather(n=args.n) if args.shape == "fan-out" else Step(i=args.n - 1)
        ok, wall_s = timed(lambda: luigi.build([final], local_scheduler=True, workers=2))
        if not ok:
            raise SystemExit("luigi.build reported a scheduling failure")
        report("luigi", args.shape, args.n, read(final.output()), wall_s, luigi.__version__)


if __name__ == "__main__":
    main()
