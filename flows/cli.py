"""The `mnist-study` command: the study, the data stage and the nightly champions, as subcommands.

Run:   mnist-study study [--profile quick ...]        (the same options as python flows/full_study.py)
       mnist-study data [--dataset fashion-mnist ...]  (python flows/prepare_data.py)
       mnist-study champions list|rollback ...         (python flows/champions.py)
       mnist-study plan [--profile quick ...]         (python flows/full_study.py --plan)
       mnist-study export --mlflow-tracking-uri URI    (python flows/export_mlflow.py; the mlflow extra)
       mnist-study <subcommand> --help
Installed with the package (`pip install mnist-study[cpu]`); the scripts under flows/ keep working.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from flows._runtime import run_cli


def _study(argv: list[str]) -> None:
    from flows.full_study import main

    main(argv)


def _data(argv: list[str]) -> None:
    from flows.prepare_data import main

    main(argv)


def _champions(argv: list[str]) -> None:
    from flows.champions import main

    main(argv)


def _plan(argv: list[str]) -> None:
    from flows.full_study import main

    main(["--plan", *argv])


def _export(argv: list[str]) -> None:
    from flows.export_mlflow import main

    main(argv)


SUBCOMMANDS: dict[str, tuple[Callable[[list[str]], None], str]] = {
    "study": (_study, "run the study (every stage, reused where nothing changed)"),
    "data": (_data, "download, verify and normalize a data set to Parquet"),
    "champions": (_champions, "list or roll back the nightly champions"),
    "plan": (_plan, "what `study` with these options would reuse or recompute, and why (writes nothing)"),
    "export": (_export, "export the runs and nightly champions to an MLflow tracking server"),
}


def usage() -> str:
    """The command's help: one line per subcommand."""
    lines = [f"  {name:<10} {description}" for name, (_, description) in SUBCOMMANDS.items()]
    return "usage: mnist-study <subcommand> [options]\n\nsubcommands:\n" + "\n".join(lines) + \
        "\n\n`mnist-study <subcommand> --help` lists a subcommand's options."


def main(argv: list[str] | None = None) -> None:
    """Dispatch to a subcommand; no subcommand or an unknown one prints the usage and exits 2."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        sys.exit(0 if argv else 2)
    if argv[0] not in SUBCOMMANDS:
        print(f"error: unknown subcommand {argv[0]!r}; expected one of: {', '.join(SUBCOMMANDS)}\n\n{usage()}",
              file=sys.stderr)
        sys.exit(2)
    command, _ = SUBCOMMANDS[argv[0]]
    run_cli(lambda: command(argv[1:]))


if __name__ == "__main__":
    main()
