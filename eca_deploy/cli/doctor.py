"""``eca-deploy doctor``: check this machine before anything else; paste the output into bug reports."""

from __future__ import annotations

import argparse
import json

NAME = "doctor"
HELP = ("check Python, torch, onnxruntime, OpenVINO, timm, TensorRT, pycuda, GPU, driver/CUDA, JetPack, power mode, "
        "DLA and memory, "
        "each OK / missing / problem with its fix; smoke-test FP32 and FP16 engines where TensorRT and a GPU work")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-smoke-test", dest="smoke", action="store_false",
                        help="skip building and running the tiny ECA network's engines (a few seconds where "
                             "TensorRT and a GPU work)%(default).0s")
    parser.add_argument("--json", action="store_true",
                        help="print the checks as JSON (name, status, detail, fix) with the exit status")
    parser.epilog = "exit status: 0 when everything present works (missing parts are fine), 1 when something " \
                    "present is broken"


def run(args: argparse.Namespace) -> int:
    from ..runtime.harness.doctor import exit_code, run_doctor

    checks = run_doctor(smoke=args.smoke, verbose=getattr(args, "verbose", False))
    code = exit_code(checks)
    broken = [c.name for c in checks if c.status == "problem"]
    summary = f"{'broken: ' + ', '.join(broken) if broken else 'everything present works'}"
    if args.json:
        print(json.dumps({"checks": [c.as_dict() for c in checks], "summary": summary, "exit_code": code}, indent=2))
        return code
    for check in checks:
        print(check.line())
    print(f"doctor: {summary}")
    return code
