"""`sgpo serve <service>`: run one service, or print its resolved config as JSON."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from sgpo.common.services import SERVICES

HELP = "run one service (generator, verifier, judge, orchestrator, trainer)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("service", choices=sorted(SERVICES) or None, help="which service to run")
    p.add_argument("--config", type=Path, help="TOML file; the service reads its [<service>] table")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    p.add_argument("--port", type=int, help="override the gRPC port")


def run(args: argparse.Namespace) -> int:
    from sgpo.common.settings import ConfigError, load_config
    from sgpo.launch.services import config_class, resolve_service_config

    overrides = {"port": args.port} if args.port is not None else {}
    try:
        cfg = load_config(config_class(args.service), args.config, known_sections=set(SERVICES), **overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(cfg.model_dump_json(indent=2))
        return 0
    from sgpo.common.logs import setup_logging

    setup_logging(args.service, cfg.log_level)
    cfg = resolve_service_config(args.service, cfg)
    server = importlib.import_module(SERVICES[args.service][1])
    try:
        server.serve(cfg)
    except ConfigError as e:  # e.g. a token or key file that cannot be read (named, never its content)
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
