"""The nightly champions: list every version of each model's champion, or roll one back.

Run:   python flows/champions.py list --artifacts-dir artifacts/nightly [--model dnn]
       python flows/champions.py rollback --artifacts-dir artifacts/nightly --model dnn [--to-version N]
Time:  a second; no Prefect server and no TensorFlow are started.
Makes: a rollback adds a version under models/champion/<model>/ holding the files of the version rolled back
       to (the newest version is always the champion; by default the one the current champion replaced) and
       rewrites tables/promotions. It waits for no one: while a nightly run holds the artifacts directory,
       it stops with a message saying so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from flows._runtime import run_cli
from mnist_models import champions, tables
from mnist_models.layout import ArtifactsLayout
from mnist_models.locking import artifacts_lock


def parser() -> argparse.ArgumentParser:
    """The command line: `list` and `rollback`, each with the nightly artifacts directory."""
    commands = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                       formatter_class=argparse.RawDescriptionHelpFormatter)
    subcommands = commands.add_subparsers(dest="command", required=True)
    listing = subcommands.add_parser("list", help="every champion version of each model, the current one marked *")
    rollback = subcommands.add_parser("rollback", help="make an earlier version the champion again")
    for command in (listing, rollback):
        command.add_argument("--artifacts-dir", required=True,
                             help="the nightly run's artifacts directory (the one holding models/champion)")
    listing.add_argument("--model", help="only this model's champion versions")
    rollback.add_argument("--model", required=True, help="the model whose champion to roll back, e.g. dnn")
    rollback.add_argument("--to-version", type=_version, metavar="N",
                          help="the version to make champion again (default: the one the current champion replaced)")
    return commands


def _version(text: str) -> int:
    number = text.lower().removeprefix("v")
    if not number.isdigit() or int(number) < 1:
        raise argparse.ArgumentTypeError(f"expected a version number such as 2 or v0002, got {text!r}")
    return int(number)


def version_line(version: champions.ChampionVersion, current: bool) -> str:
    """One version as one line of `list`."""
    accuracy = f"{version.accuracy:.4f}"
    return (f"{'*' if current else ' '} {version.label}  {version.date or '?':10}  accuracy {accuracy}  "
            f"run {version.run_id}  {version.reason}")


def list_champions(layout: ArtifactsLayout, model: str | None) -> str:
    """Every champion version of every model (or of `model`), oldest first; reads, never writes."""
    _check_champions_dir(layout)
    models = [model] if model else champions.champion_models(layout.champions_dir)
    if not models:
        return f"no champion under {layout.champions_dir}"
    lines = []
    for name in models:
        versions = champions.champion_versions(layout.champions_dir, name)
        if not versions:
            raise ValueError(f"{name} has no champion under {layout.champions_dir}; models with one: "
                             + (", ".join(champions.champion_models(layout.champions_dir)) or "none"))
        lines.append(f"{name} ({champions.model_folder(layout.champions_dir, name)}):")
        lines += [version_line(version, version is versions[-1]) for version in versions]
    return "\n".join(lines)


def roll_back(layout: ArtifactsLayout, model: str, to_version: int | None, today: dt.date) -> champions.ChampionVersion:
    """Roll `model`'s champion back (holding the artifacts directory) and rewrite the promotions table."""
    _check_champions_dir(layout)
    with artifacts_lock(layout.root):
        version = champions.rollback(layout.champions_dir, model, today, to_version)
        tables.write_table(champions.promotions_table(layout.champions_dir), layout.tables_dir, "promotions")
    return version


def _check_champions_dir(layout: ArtifactsLayout) -> None:
    if not layout.champions_dir.is_dir():
        raise FileNotFoundError(f"{layout.champions_dir} does not exist; expected --artifacts-dir to be a nightly "
                                "run's artifacts directory (e.g. artifacts/nightly), which holds models/champion")


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run `list` or `rollback`."""
    arguments = parser().parse_args(argv)
    layout = ArtifactsLayout.at(arguments.artifacts_dir)
    if arguments.command == "list":
        print(list_champions(layout, arguments.model))
        return
    version = roll_back(layout, arguments.model, arguments.to_version, dt.datetime.now(dt.timezone.utc).date())
    print(f"{arguments.model}: champion is now {version.label}, the model of v{version.source_version:04d} "
          f"(accuracy {version.accuracy:.4f}, run {version.run_id}); it was v{version.previous_version:04d}",
          file=sys.stdout)


if __name__ == "__main__":
    run_cli(main)
