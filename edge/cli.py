"""The ``facematch`` command."""

from __future__ import annotations

import argparse
import sys

from edge import __version__
from edge.config import ConfigError, Settings, load_settings
from edge.logs import setup_logging

# The product's processes that `facematch up` runs, in start order: (name, python module).
PROCESSES: list[tuple[str, str]] = [("hub", "hub")]


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def cmd_up(args: argparse.Namespace) -> int:
    from edge.supervisor import Supervisor

    settings = _settings(args)
    setup_logging("up", settings.log_level)
    return Supervisor(settings, PROCESSES).run()


def cmd_doctor(args: argparse.Namespace) -> int:
    from edge.doctor import FAIL, report, run_checks

    checks = run_checks(_settings(args))
    print(report(checks))
    return 1 if any(c.level == FAIL for c in checks) else 0


def cmd_models(args: argparse.Namespace) -> int:
    from models import fetch

    settings = _settings(args)
    if args.models_command == "list":
        return fetch.list_models(settings)
    if args.models_command == "verify":
        return fetch.verify(settings)
    try:
        return fetch.fetch(settings, args.names, everything=args.all)
    except fetch.FetchError as exc:
        print(exc, file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facematch", description=__doc__)
    parser.add_argument("--version", action="version", version=f"facematch {__version__}")
    parser.add_argument("--config", help="config file (default: $FACEMATCH_CONFIG or config.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="run everything on this machine (starts Redis/Mosquitto if needed)").set_defaults(
        func=cmd_up
    )
    sub.add_parser("doctor", help="check what is installed, reachable or missing").set_defaults(func=cmd_doctor)
    models = sub.add_parser("models", help="fetch, list or verify model weights")
    models.set_defaults(func=cmd_models)
    models_sub = models.add_subparsers(dest="models_command", required=True)
    fetch = models_sub.add_parser("fetch", help="fetch the default models (or those named), verifying sha256")
    fetch.add_argument("names", nargs="*", help="models to fetch (default: every default model)")
    fetch.add_argument("--all", action="store_true", help="also the optional models")
    models_sub.add_parser("list", help="every model of the manifest: role, size, licence, fetched or not")
    models_sub.add_parser("verify", help="check the sha256 of every fetched model")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
