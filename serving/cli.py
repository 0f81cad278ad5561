"""`ganserve serve` (start the server) and `ganserve client` (call its image API) subcommands."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import grpc

from ganserve.core.cli_args import INT32_MAX, UINT64_MAX, address, count, duration, integer, port
from ganserve.core.errors import GanserveError
from ganserve.core.precisions import PRECISIONS
from ganserve.serving.limits import Limits


def add_commands(subparsers: argparse._SubParsersAction, name: str) -> None:
    """Add the `serve` or the `client` subcommand (ganserve.pipeline.cli maps both names here)."""
    if name == "serve":
        _add_serve(subparsers)
    elif name == "client":
        _add_client(subparsers)
    else:
        raise ValueError(f"serving.cli has no command {name!r}")


MAX_MESSAGE_MB = INT32_MAX // (1024 * 1024)  # gRPC takes the byte limit as an int32


# -- serve ----------------------------------------------------------------------------------------------
def _add_serve(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="serve a model repository over gRPC and HTTP",
                              description="Serve every model of a repository: KServe v2 (OIP) + ganserve.v1.Images "
                                          "over gRPC with health and reflection; KServe v2 REST, the image API and a "
                                          "page to try every model over HTTP; Prometheus metrics.")
    p.add_argument("--repo", required=True, type=Path, help="model repository folder")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port(), default=8001, help="gRPC port (0 = any free port, printed)")
    p.add_argument("--http-port", type=port(off=True), default=8000,
                   help="HTTP port: KServe v2 REST, the image API, the page at / and /metrics (0 = any, -1 = off)")
    p.add_argument("--metrics-port", type=port(off=True), default=8002,
                   help="Prometheus HTTP port (0 = any, -1 = off)")
    p.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate chain: gRPC, HTTP and metrics over TLS")
    p.add_argument("--tls-key", type=Path, default=None, help="PEM private key of --tls-cert")
    p.add_argument("--tls-client-ca", type=Path, default=None,
                   help="PEM CA bundle: mutual TLS, every client must present a certificate it signed")
    p.add_argument("--auth-token-file", type=Path, default=None,
                   help="bearer tokens (one per line, >= 16 characters) required on every call but health and "
                        "readiness: 'authorization: Bearer <token>'")
    p.add_argument("--providers", default="cuda,openvino,cpu",
                   help="execution providers to try, in order of preference (those the installed onnxruntime lacks "
                        "are skipped with the reason logged; CPU is always the last resort)")
    p.add_argument("--precision", default="auto", choices=["auto", *PRECISIONS],
                   help="auto: per model, the fastest provider/precision that passes the reference check; "
                        "else pin this precision (a model's config.pbtxt parameters can pin its own)")
    p.add_argument("--intra-op-threads", type=count(0), default=0,
                   help="threads per run (0 = the cores divided among the streams)")
    p.add_argument("--streams", type=count(1), default=0,
                   help="runs of one model in flight at once, for every model: 1 = latency mode (measured best with "
                        "the dynamic batcher on 2 cores), N = throughput mode with cores/N threads each (default: "
                        "each model's config.pbtxt instance_group count, which ganserve's exports set to 1)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="warm-start cache: each model's measured provider/precision choice (re-checked on the "
                        "reference set at load, re-measured when a model file, the machine or these settings change) "
                        "and OpenVINO's compiled models (default: $GANSERVE_CACHE_DIR, else ~/.cache/ganserve)")
    p.add_argument("--no-cache", action="store_true",
                   help="measure every candidate at every load and write no cache")
    p.add_argument("--max-message-mb", type=integer(1, MAX_MESSAGE_MB, "(gRPC's limit is 2 GiB)"), default=64,
                   help="gRPC max message size, both directions")
    p.add_argument("--allow-model-control", action="store_true", help="allow RepositoryModelLoad/Unload")
    p.add_argument("--shared-memory", choices=["auto", "on", "off"], default="auto",
                   help="the system shared-memory extension (tensors in /dev/shm regions of clients on this host): "
                        "auto = on when --host is a loopback address, where every client is local (default)")
    p.add_argument("--poll-seconds", type=duration(note="(0 = off)"), default=0.0,
                   help="poll mode: re-read the repository this often; new version folders load beside the serving "
                        "ones (precision choice and reference check) and take over, failing ones are refused "
                        "(0 = off, the default)")
    p.add_argument("--drain-seconds", type=duration(), default=0.0,
                   help="on SIGTERM, report NOT_SERVING but keep taking requests this long before draining, so a "
                        "load balancer's health check sees it first (set it above the check interval)")
    p.add_argument("--max-batch-size", type=count(1), default=None, help="override config.pbtxt max_batch_size")
    p.add_argument("--max-queue-delay-us", type=count(0), default=None, help="override max_queue_delay_microseconds")
    p.add_argument("--max-queue-size", type=count(1), default=None, help="pending requests per model before refusing")
    p.add_argument("--no-batching", action="store_true", help="run every request alone")
    p.add_argument("--tile-size", type=count(0, "(0 = no tiling)"), default=128,
                   help="image API tile size in input pixels (0 = no tiling)")
    p.add_argument("--tile-overlap", type=count(0), default=16, help="image API tile overlap in input pixels")
    p.add_argument("--buckets", action="store_true",
                   help="image API: pad whole images of tile-safe models up to a bucket size per axis, so few input "
                        "shapes reach the runtime; border pixels then differ from the exact answer (docs/serving.md, "
                        "Shapes)")
    p.add_argument("--max-compiled-shapes", type=count(0, "(0 = no bound)"), default=16,
                   help="distinct input shapes an OpenVINO/CUDA session may compile before a fresh session "
                        "replaces it and its memory is freed; tile-safe models get 4 times as many (0 = no bound)")
    p.add_argument("--max-pixels", type=integer(1), default=4096 * 4096, help="largest input image (width x height)")
    p.add_argument("--grace-seconds", type=duration(), default=30.0, help="drain period on SIGTERM")
    d = Limits()
    p.add_argument("--header-timeout", type=duration(positive=True), default=d.header_timeout_s,
                   help="HTTP: seconds for a request's head to arrive after its first byte")
    p.add_argument("--body-timeout", type=duration(positive=True), default=d.body_timeout_s,
                   help="HTTP: seconds for a request's body to arrive after its head (408 past it)")
    p.add_argument("--idle-timeout", type=duration(positive=True), default=d.idle_timeout_s,
                   help="HTTP keep-alive and gRPC: close a connection idle this long")
    p.add_argument("--max-connections", type=count(1), default=d.max_connections,
                   help="HTTP connections held at once; past it only health/readiness answer")
    p.add_argument("--max-rpcs", type=count(1), default=d.max_rpcs,
                   help="gRPC calls in flight at once; past it RESOURCE_EXHAUSTED (health always answers)")
    p.add_argument("--max-connection-age", type=duration(positive=True), default=d.max_connection_age_s,
                   help="gRPC: seconds before a connection is asked to go away (clients re-balance)")
    p.add_argument("--max-json-mb", type=duration(positive=True), default=d.max_json_mb,
                   help="KServe v2 REST: largest JSON body in MiB (413 past it: use the binary tensor extension)")
    p.add_argument("--max-memory-mib", type=count(0), default=d.max_memory_mib,
                   help="memory budget for requests in flight (0 = the container's limit less a margin)")
    p.add_argument("--max-output-pixels", type=count(1), default=8192 * 8192,
                   help="largest image-API output, width x height")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from ganserve.serving.choice_cache import default_cache_dir
    from ganserve.serving.image_api import ImageSettings
    from ganserve.serving.model_manager import BatchingOverrides
    from ganserve.serving.runtime import RuntimeSettings, select_providers
    from ganserve.serving.security import TlsSettings, Tokens
    from ganserve.serving.server import ServerConfig, serve

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.repo.is_dir():
        raise GanserveError(f"{args.repo}: model repository not found")
    # numeric flags (ports, counts, sizes, seconds) are range-checked by their argparse types (ganserve.core.cli_args)
    if (args.tls_cert is None) != (args.tls_key is None):
        raise GanserveError("--tls-cert and --tls-key go together")
    if args.tls_client_ca is not None and args.tls_cert is None:
        raise GanserveError("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS first)")
    tls = TlsSettings(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
    if tls is not None:
        tls.ssl_context()  # unreadable or mismatched files: one line now, not after every model has loaded
    if args.auth_token_file is not None:
        Tokens.from_file(args.auth_token_file)
    providers = [s for s in args.providers.split(",") if s.strip()]
    select_providers(providers)  # fail fast on an unknown provider name
    if args.no_cache and args.cache_dir is not None:
        raise GanserveError("--cache-dir and --no-cache contradict each other")
    cache_dir = None if args.no_cache else (args.cache_dir or default_cache_dir())
    logging.getLogger("ganserve.serving").info("choice cache: %s", cache_dir or "off (--no-cache)")
    config = ServerConfig(
        repo=args.repo, host=args.host, port=args.port, http_port=args.http_port, metrics_port=args.metrics_port,
        runtime=RuntimeSettings(providers=providers, intra_op_threads=args.intra_op_threads, precision=args.precision,
                                streams=args.streams, cache_dir=cache_dir,
                                max_compiled_shapes=args.max_compiled_shapes),
        batching=BatchingOverrides(max_batch_size=args.max_batch_size, max_queue_delay_us=args.max_queue_delay_us,
                                   max_queue_size=args.max_queue_size, disabled=args.no_batching),
        images=ImageSettings(max_pixels=args.max_pixels, tile_size=args.tile_size, tile_overlap=args.tile_overlap,
                             max_output_pixels=args.max_output_pixels, buckets=args.buckets),
        max_message_mb=args.max_message_mb, allow_model_control=args.allow_model_control,
        shared_memory=args.shared_memory,
        grace_seconds=args.grace_seconds, tls=tls, auth_token_file=args.auth_token_file,
        poll_seconds=args.poll_seconds, drain_seconds=args.drain_seconds,
        limits=Limits(header_timeout_s=args.header_timeout, body_timeout_s=args.body_timeout,
                      idle_timeout_s=args.idle_timeout, max_connections=args.max_connections, max_rpcs=args.max_rpcs,
                      max_connection_age_s=args.max_connection_age, max_json_mb=args.max_json_mb,
                      max_memory_mib=args.max_memory_mib),
    )
    try:
        return serve(config)
    except OSError as exc:
        raise GanserveError(str(exc)) from exc


# -- client ---------------------------------------------------------------------------------------------
IMAGE_VERBS = {"sr": "super_resolve", "translate": "translate", "derain": "derain"}


def _image_args(v: argparse.ArgumentParser) -> None:
    """IN OUT --model and the image options every image-to-image verb takes."""
    v.add_argument("input", type=Path)
    v.add_argument("output", type=Path)
    v.add_argument("--model", required=True)
    v.add_argument("--format", default=None, help="PNG or JPEG (default: from OUT's extension)")
    v.add_argument("--quality", type=integer(0, 100, "(0 = the server's default, 90)"), default=0,
                   help="JPEG quality 1..100 (default 0: the server's, 90)")
    v.add_argument("--tile-size", type=count(0, "(0 = no tiling)"), default=None,
                   help="tile size in input pixels (0 = no tiling; default: the card's or the server's)")
    v.add_argument("--tile-overlap", type=count(0), default=None, help="tile overlap in input pixels")
    v.add_argument("--ensemble", type=_ensemble_passes, default=None,
                   help="8: self-ensemble, the average of the 8 flips and rotations of IN (8 passes, slower; "
                        "tile-safe models only); 0 or 1: one pass (the default)")


def _ensemble_passes(text: str) -> int:
    """--ensemble: 0 or 1 (one pass) or 8 (the eight flips and rotations); any other value is a usage error."""
    from ganserve.core.ensemble import check_passes

    value = integer(0, 8)(text)
    try:
        check_passes(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _add_client(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("client", help="call a running server's image API")
    p.add_argument("--server", type=address, default=os.environ.get("GANSERVE_SERVER", "127.0.0.1:8001"),
                   help="host:port")
    p.add_argument("--timeout", type=duration(positive=True), default=120.0, help="seconds")
    p.add_argument("--tls-ca", type=Path, default=None, help="PEM CA that signed the server's certificate: use TLS")
    p.add_argument("--tls-cert", type=Path, default=None, help="PEM client certificate (mutual TLS)")
    p.add_argument("--tls-key", type=Path, default=None, help="PEM key of --tls-cert")
    p.add_argument("--token-file", type=Path, default=None,
                   help="file whose first line is the bearer token (default: $GANSERVE_TOKEN, if set)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    t = verbs.add_parser("transform", help="any image-to-image model: IN image -> OUT image (Transform)")
    _image_args(t)
    t.add_argument("--condition", action="append", default=[], metavar="NAME=CHOICE",
                   help="a condition input and its choice, e.g. age=60+ (repeatable; see `client list`)")
    t.add_argument("--mask", type=Path, default=None, help="mask image, IN's size, for models with a mask input")
    for verb in (*IMAGE_VERBS, "age"):
        v = verbs.add_parser(verb, help=f"{verb}: IN image -> OUT image")
        _image_args(v)
        if verb == "age":
            v.add_argument("--target", required=True, help="age group label (see `client list`)")
    c = verbs.add_parser("classify", help="classify: IN image -> top-k labels")
    c.add_argument("input", type=Path)
    c.add_argument("--model", required=True)
    c.add_argument("--top-k", type=count(1), default=5)
    g = verbs.add_parser("generate", help="generate: a sample from a generative model -> OUT image")
    g.add_argument("output", type=Path)
    g.add_argument("--model", required=True)
    g.add_argument("--seed", type=integer(0, UINT64_MAX), default=0, help="latent seed (same seed, same image)")
    g.add_argument("--condition", default="", help="class label for conditional models (see `client list`)")
    g.add_argument("--format", default=None, help="PNG or JPEG (default: from OUT's extension)")
    verbs.add_parser("list", help="models the server has: state, task, the RPC that serves each, its conditions")
    p.set_defaults(func=_run_client)


def parse_conditions(pairs: list[str]) -> dict[str, str]:
    """NAME=CHOICE strings -> {name: choice}; a malformed or repeated one is a one-line error."""
    found: dict[str, str] = {}
    for pair in pairs:
        name, sep, choice = pair.partition("=")
        if not sep or not name.strip() or not choice.strip():
            raise GanserveError(f"--condition {pair!r}: write NAME=CHOICE (e.g. age=60+)")
        if name.strip() in found:
            raise GanserveError(f"--condition {name.strip()!r} given twice")
        found[name.strip()] = choice.strip()
    return found


def _listed(m) -> str:
    """One `client list` line: name, version, state, task, provider (reason), RPC, conditions and choices."""
    extra = f" ({m.reason})" if m.reason else ""
    conditions = "; ".join(f"{c.name}={'|'.join(c.choices)}" + (f" (default {c.default})" if c.default else "")
                           for c in m.conditions)
    return f"{m.name}\tv{m.version or '-'}\t{m.state}\t{m.task}\t{m.provider}{extra}\t{m.rpc or 'ModelInfer'}" + \
        (f"\t{conditions}" if conditions else "")


def _run_client(args: argparse.Namespace) -> int:
    from ganserve.serving.client import ImageOptions, ImagesClient

    conditions = parse_conditions(args.condition) if args.verb == "transform" else {}
    if (args.tls_cert is None) != (args.tls_key is None):
        raise GanserveError("--tls-cert and --tls-key go together")
    token = os.environ.get("GANSERVE_TOKEN") or None
    if args.token_file is not None:
        lines = _read(args.token_file).decode("utf-8", "replace").split()
        if not lines:
            raise GanserveError(f"{args.token_file}: no token in the file")
        token = lines[0]
    tls = {"root_certificates": _read(args.tls_ca) if args.tls_ca else None,
           "client_cert": _read(args.tls_cert) if args.tls_cert else None,
           "client_key": _read(args.tls_key) if args.tls_key else None}
    if tls["root_certificates"] is None and tls["client_cert"] is not None:
        raise GanserveError("--tls-cert needs --tls-ca (the CA that signed the server)")
    try:
        with ImagesClient(args.server, timeout=args.timeout, token=token, **tls) as client:
            if args.verb == "list":
                for m in client.list_models().models:
                    print(_listed(m))
                return 0
            if args.verb == "generate":
                fmt = args.format or ("JPEG" if args.output.suffix.lower() in (".jpg", ".jpeg") else "PNG")
                reply = client.generate(args.model, args.seed, args.condition, ImageOptions(output_format=fmt))
                return _write_reply(args.output, reply)
            data = _read(args.input)
            if args.verb == "classify":
                reply = client.classify(args.model, data, top_k=args.top_k)
                for s in reply.scores:
                    print(f"{s.label}\t{s.probability:.4f}")
                return 0
            fmt = args.format or ("JPEG" if args.output.suffix.lower() in (".jpg", ".jpeg") else "PNG")
            options = ImageOptions(output_format=fmt, jpeg_quality=args.quality, tile_size=args.tile_size,
                                   tile_overlap=args.tile_overlap, ensemble=args.ensemble)
            if args.verb == "transform":
                mask = _read(args.mask) if args.mask is not None else None
                reply = client.transform(args.model, data, conditions, mask, options)
            elif args.verb == "age":
                reply = client.age_face(args.model, data, args.target, options)
            else:
                reply = getattr(client, IMAGE_VERBS[args.verb])(args.model, data, options)
    except grpc.RpcError as exc:
        raise GanserveError(f"{exc.code().name}: {exc.details()}") from exc
    except ValueError as exc:
        raise GanserveError(str(exc)) from exc
    return _write_reply(args.output, reply)


def _write_reply(output: Path, reply) -> int:
    """Write an image reply atomically and say what came back."""
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_bytes(reply.image)
    os.replace(tmp, output)
    print(f"{output}: {reply.width}x{reply.height}, {reply.timing.total_ms:.1f} ms in the server "
          f"({reply.tiles} run(s))")
    return 0


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise GanserveError(f"{path}: {exc.strerror or exc}") from exc
