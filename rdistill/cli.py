"""`rdistill <command> --config FILE key.sub=value ...`: the command line over the stage registry.

Every stage of rdistill/stages/ is a command of the same name with its own arguments; `run` is the pipeline and
`stages` lists them. Each command reads one YAML config (a path, or the name of a packaged one in rdistill/configs/),
applies `key.sub=value` overrides, validates the result once, and runs the stage. Errors that the user can fix are
printed as one line, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from rdistill.errors import RdistillError

log = logging.getLogger("rdistill")

OVERRIDES_HELP = (
    "config overrides as key.sub=value, applied after --config; values are YAML "
    "(e.g. train.lr=0.0005 data.min_user_interactions=5 eval.ks=[10,20] data.root=../shared/data)"
)
# the commands' earlier two-word spellings, still accepted
_RENAMED = {("teacher", "train"): "teacher-train", ("teacher", "infer"): "teacher-infer"}


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", default=None,
                        help="YAML config: a file, or a packaged name (ml-latest-small, amazon-scientific, "
                             "amazon-beauty); defaults apply to keys it leaves out")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)


def _add_run_command(commands) -> None:
    from rdistill.stages.registry import pipeline_stages

    names = [stage.name for stage in pipeline_stages()]
    run = commands.add_parser(
        "run",
        help=f"the whole pipeline: {' -> '.join(names)} (+ export), resumable",
        description=(
            f"Run the pipeline's stages ({', '.join(names)}; tune exports the winner to serving/model/) under one "
            "artifact root. Each stage is recorded in <artifact_root>/pipeline.json with a hash of its settings and "
            "of its input's manifest; a rerun skips stages that are up to date and resumes at the first that failed "
            "or changed. --profile quick runs a slice of the data in about 20 minutes on 2 cores; --profile full is "
            "for real runs. Serve the result with `rdistill serve`."
        ),
    )
    run.add_argument("--profile", default=None, help="quick | full | a YAML file of dotted keys (before overrides)")
    run.add_argument("--serve", action="store_true",
                     help="then deploy the winner with Ray Serve on 127.0.0.1 and answer a sample request")
    run.add_argument("--keep-serving", action="store_true", help="with --serve: keep the endpoint up until Ctrl-C")
    run.add_argument("--port", type=int, default=8000, help="with --serve: the HTTP port (default 8000)")
    run.add_argument("--force", action="append", default=[], choices=names,
                     help="rerun this stage even when up to date (repeatable)")
    _add_config_arguments(run)


def build_parser() -> argparse.ArgumentParser:
    from rdistill.stages.registry import stages

    parser = argparse.ArgumentParser(
        prog="rdistill",
        description="Distil LLM-based sequential recommenders into small, fast students.",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="only warnings and errors on stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for stage in stages():
        command = commands.add_parser(stage.name, help=stage.help, description=stage.description)
        stage.add_arguments(command)
        _add_config_arguments(command)
    _add_run_command(commands)
    commands.add_parser("stages", help="list the stages: job module, what each reads and writes, pipeline or not")
    return parser


def _renamed(argv: list[str]) -> list[str]:
    for index in range(len(argv) - 1):
        new = _RENAMED.get((argv[index], argv[index + 1]))
        if new is not None:
            print(f"rdistill: `{argv[index]} {argv[index + 1]}` is now `{new}`", file=sys.stderr)
            return [*argv[:index], new, *argv[index + 2:]]
        if not argv[index].startswith("-"):
            break
    return argv


def _options(args: argparse.Namespace) -> dict:
    skip = {"command", "quiet", "config", "overrides", "profile"}
    return {key: value for key, value in vars(args).items() if key not in skip}


def _run_command(args: argparse.Namespace, config) -> dict | None:
    from rdistill.pipeline import run_command

    return run_command(config, force=tuple(args.force), serve=args.serve, keep_serving=args.keep_serving,
                       port=args.port)


def _execute(args: argparse.Namespace) -> dict | list | None:
    if args.command == "stages":
        from rdistill.stages.registry import describe_stages

        return describe_stages()
    from rdistill.config import load_config, profile_overrides
    from rdistill.stages.registry import StageContext, run_stage

    overrides = list(args.overrides)
    if getattr(args, "profile", None):
        overrides = profile_overrides(args.profile) + overrides
    config = load_config(args.config, overrides)
    if args.command == "run":
        return _run_command(args, config)
    return run_stage(args.command, StageContext(config, _options(args)))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(_renamed(list(sys.argv[1:] if argv is None else argv)))
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        summary = _execute(args)
    except RdistillError as err:
        print(f"rdistill {args.command}: error: {err}", file=sys.stderr)
        return 2
    if summary is not None:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
