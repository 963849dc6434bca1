"""Entry point: builds the parser from the command modules and maps errors to exit codes."""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Sequence

from .. import __version__
from ..errors import EcaDeployError, first_line
from . import bench, build, doctor, export, inspect, models, parity, pipeline, quantize, report

# Each command module provides NAME, HELP, add_arguments(parser) and run(args) -> int.
COMMANDS = [doctor, models, export, inspect, quantize, build, parity, bench, report, pipeline]


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback when something fails")
    parser = argparse.ArgumentParser(
        prog="eca-deploy", parents=[common],
        description="Take trained ECA networks from PyTorch to ONNX, FP16/INT8 and TensorRT engines, "
                    "and check them for accuracy and speed on the target device.")
    parser.add_argument("--version", action="version", version=f"eca-deploy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        cmd = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP, parents=[common],
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        module.add_arguments(cmd)
        cmd.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):
        # File names need not be UTF-8 (undecodable bytes become surrogates): print them escaped, never fail.
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    verbose = getattr(args, "verbose", False)
    try:
        return int(args.run(args) or 0)
    except EcaDeployError as exc:
        if verbose:
            traceback.print_exc()
        print(f"eca-deploy: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("eca-deploy: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of ours: still one line unless asked for more
        if verbose:
            traceback.print_exc()
        print(f"eca-deploy: internal error: {type(exc).__name__}: {first_line(exc)} (rerun with --verbose for the "
              "traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
