"""``eca-deploy serve``: serve an artifact through a real Triton Inference Server (PyTriton), until Ctrl-C."""

from __future__ import annotations

import argparse
import sys

from . import args as shared

NAME = "serve"
HELP = ("serve a model through a Triton Inference Server (PyTriton) on its onnxruntime, OpenVINO or TensorRT "
        "backend, with dynamic batching, until Ctrl-C")
GROUPS = (shared.RuntimeArgs(),)


def port(text: str) -> int:
    value = shared.positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 1-65535, got '{text}'")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="ARTIFACT",
                        help="a .onnx file (onnxruntime), openvino:<file.onnx> or an OpenVINO IR .xml (OpenVINO), "
                             "a TensorRT .engine/.plan, or torch:<model>[:weights]")
    parser.add_argument("--name", default=None,
                        help="the model's name on the server: letters, digits, '_', '-', '.' (not first), at most 64 (default: the "
                             "file name without suffix, other characters made '_', as `triton` names its folder)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address the HTTP and gRPC endpoints listen on (0.0.0.0: every interface)")
    parser.add_argument("--http-port", type=port, default=8000, help="HTTP/REST port")
    parser.add_argument("--grpc-port", type=port, default=8001, help="gRPC port")
    parser.add_argument("--max-batch-size", type=shared.positive_int, default=None, metavar="N",
                        help="largest batch the dynamic batcher forms (default: the model's largest, at most 8)")
    parser.add_argument("--imgsz", type=shared.image_size, default=None,
                        help="input size for torch:<model> (default: 224)")
    shared.add_groups(parser, GROUPS)


def model_name(artifact, name: str | None) -> str:
    """The name clients address: --name, else the artifact's; one rule with `triton`'s repository folders."""
    from ..packaging.triton import check_name, default_name

    return check_name(name) if name is not None else default_name(artifact)


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..runtime.registry import open_backend, parse_spec
    from ..runtime.triton.server import ServeConfig, require_free_ports, require_pytriton, serve

    if args.http_port == args.grpc_port:
        raise UsageError(f"--http-port and --grpc-port are both {args.http_port}")
    artifact = parse_spec(args.model)
    if artifact.row.remote:
        raise UsageError("serve takes a model file or torch:<model>, not a model that a server already serves")
    cfg = ServeConfig(model_name(artifact, args.name), args.host, args.http_port, args.grpc_port,
                      args.max_batch_size)
    require_pytriton()  # before the model is loaded: a missing install or a taken port is said at once
    require_free_ports(cfg)
    options = shared.RuntimeArgs().build(args)
    with open_backend(artifact, options, imgsz=args.imgsz or 224) as backend:
        print(f"{artifact.label} on {backend.name}", flush=True)
        serve(backend, cfg, announce=lambda line: print(line, flush=True))
    print("stopped", file=sys.stderr)
    return 0
