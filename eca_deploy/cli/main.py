"""Entry point: builds the parser from the command modules and maps errors to exit codes."""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import traceback
from typing import Sequence

from .. import __version__
from ..errors import EcaDeployError, UsageError, first_line
from . import bench, build, deepstream, doctor, export, inspect, models, parity, pipeline, predict, quantize, report, serve, triton

# Each command module provides NAME, HELP, add_arguments(parser) and run(args) -> int.
COMMANDS = [doctor, models, export, inspect, quantize, build, parity, bench, predict, report, pipeline, deepstream, serve, triton]


class Parser(argparse.ArgumentParser):
    """Usage errors as one line, like every other error (the usage itself is one --help away)."""

    def error(self, message: str):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" only where it tells something: not on required flags, switches, empty or unset
    defaults, or help that already says its default in words."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (action.required or default is None or default == argparse.SUPPRESS or isinstance(default, bool)
                or default == [] or "default" in text):
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    common = Parser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback when something fails")
    parser = Parser(
        prog="eca-deploy", parents=[common],
        description="Take trained ECA networks from PyTorch to ONNX, FP16/INT8 and TensorRT engines, "
                    "and check them for accuracy and speed on the target device.")
    parser.add_argument("--version", action="version", version=f"eca-deploy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        cmd = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP, parents=[common],
                             formatter_class=HelpFormatter)
        module.add_arguments(cmd)
        cmd.set_defaults(run=module.run)
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """parse_args, except that a flag the command does not know is answered by the command's own parser: its
    --help, and the flag it most likely meant (argparse would point at `eca-deploy --help`)."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        command = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[args.command]
        flags = [flag for action in command._actions for flag in action.option_strings]
        typed = next((u for u in unknown if u.startswith("-")), unknown[0]).split("=")[0]
        close = difflib.get_close_matches(typed, flags, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UsageError(f"unrecognized arguments: {' '.join(unknown)}{hint} (see `{command.prog} --help`)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):
        # File names need not be UTF-8 (undecodable bytes become surrogates): print them escaped, never fail.
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # output into a closed pipe fails here (--help too), not at interpreter exit
    except BrokenPipeError:  # the reader went away (`| head -3`): a normal end
        _stdout_to_devnull()
        return 0


def _stdout_to_devnull() -> None:
    """What the Python docs recommend after a broken pipe: later writes and the exit flush go nowhere."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (a test's capture): nothing is left to flush into a pipe
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _run(argv: Sequence[str] | None) -> int:
    args = None  # a usage error comes before there are any
    try:
        args = parse(build_parser(), argv)
        return int(args.run(args) or 0)
    except EcaDeployError as exc:
        if getattr(args, "verbose", False):
            traceback.print_exc()
        print(f"eca-deploy: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("eca-deploy: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        raise
    except Exception as exc:  # a bug of ours: still one line unless asked for more
        if getattr(args, "verbose", False):
            traceback.print_exc()
        print(f"eca-deploy: internal error: {type(exc).__name__}: {first_line(exc)} (rerun with --verbose for the "
              "traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
