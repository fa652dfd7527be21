"""Server commands: ``serve`` (run the tile server), ``submit`` (queue a scene, optionally wait
and download its results) and ``results`` (list jobs, or fetch one job's results).

Registering imports no web framework: ``submit`` and ``results`` use the standard-library
client, and ``serve`` imports FastAPI and uvicorn only when it runs, saying which extra to
install where they are missing.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from sarvessel.runtime.backends import BackendKind
from sarvessel.runtime.backends.tta import TTA_SETS
from sarvessel.runtime.errors import SarvesselError
from sarvessel.runtime.server.settings import DEFAULT_PORT, TOKEN_ENV, load_settings, read_token

log = logging.getLogger(__name__)

#: Environment variable naming the server ``submit``/``results`` talk to.
SERVER_ENV = "SARVESSEL_SERVER"
#: Modules ``serve`` needs (the ``serve`` extra).
WEB_MODULES = ("fastapi", "uvicorn", "multipart", "prometheus_client")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``serve``, ``submit`` and ``results`` to the ``sarvessel`` parser."""
    p = sub.add_parser(
        "serve", help="run the tile server (scene jobs and a tile endpoint over HTTP)",
        description="Serve scene jobs and tile detection over HTTP (OpenAPI at /docs). Binds "
        "127.0.0.1 unless --host says otherwise; any other address needs a bearer token. "
        "Jobs persist in WORK_DIR and resume after a crash. Needs the 'serve' extra: "
        "pip install 'sarvessel[serve]'.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"TCP port (default {DEFAULT_PORT})")
    p.add_argument("--work-dir", type=Path, default=Path("sarvessel-server"),
                   help="job database, outputs and uploads (default ./sarvessel-server)")
    p.add_argument("--data-root", type=Path, action="append", default=[],
                   help="folder whose scenes clients may name by path (repeatable; default: "
                   "none, uploads only)")
    p.add_argument("--token-file", type=Path,
                   help=f"file holding the bearer token (default: ${TOKEN_ENV}, else no auth)")
    p.add_argument("--max-queue", type=int, default=8,
                   help="queued jobs before 429 (default 8)")
    p.add_argument("--workers", type=int, default=1, help="scene jobs run at once (default 1)")
    p.add_argument("--max-upload-mb", type=float, default=8192,
                   help="largest upload in MiB (default 8192)")
    p.add_argument("--max-tile-batch", type=int, default=64,
                   help="most tiles per tile request (default 64)")
    p.add_argument("--tile-backend", type=BackendKind, choices=list(BackendKind),
                   default=BackendKind.AUTO,
                   metavar="{" + ",".join(k.value for k in BackendKind) + "}",
                   help="backend of the tile endpoint when a request names none (default auto)")
    p.add_argument("--model", type=Path, help="ONNX model of the onnx/auto backends "
                   "(default: the shipped scene model)")
    p.add_argument("--package", type=Path, help="deploy package of the sim/fpga backends "
                   "(default: as for `detect`)")
    p.add_argument("--threads", type=int, help="onnxruntime threads (default: all cores)")
    p.add_argument("--no-power-sensor", action="store_true",
                   help="do not read a power sensor (watts stay unreported)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "submit", help="queue a scene on a tile server (and wait for its results)",
        description="Queue a scene on a running `sarvessel serve`: by path (the server reads "
        "it under its --data-root) or, with --upload, by sending its band files.",
    )
    p.add_argument("scene", type=Path, help="scene folder or GeoTIFF")
    p.add_argument("--upload", action="store_true",
                   help="send the files instead of the path")
    p.add_argument("--backend", type=BackendKind, choices=list(BackendKind),
                   default=BackendKind.AUTO,
                   metavar="{" + ",".join(k.value for k in BackendKind) + "}",
                   help="tile detector (default auto)")
    p.add_argument("--conf", type=float, help="score threshold (default: the model's)")
    p.add_argument("--tta", type=int, default=1, choices=sorted(TTA_SETS),
                   help="dihedral views per tile (default 1)")
    p.add_argument("--power-budget", type=float, metavar="W",
                   help="keep the job's moving-average power at or under W watts (the server "
                   "needs a power sensor)")
    p.add_argument("--wait", action="store_true", help="wait for the job and download results")
    p.add_argument("--out", type=Path, default=Path("out"),
                   help="where --wait saves the results (default out)")
    _add_server_args(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser(
        "results", help="list a tile server's jobs, or fetch one job's results",
        description="Without JOB: list jobs. With JOB: show it, and save its results once done.",
    )
    p.add_argument("job", nargs="?", help="job id")
    p.add_argument("--out", type=Path, default=Path("out"),
                   help="folder for the result files (default out)")
    p.add_argument("--kind", choices=["csv", "geojson", "png", "summary", "power", "all"],
                   default="all", help="which result to save (default all the job has)")
    p.add_argument("--wait", action="store_true", help="wait until the job has finished")
    _add_server_args(p)
    p.set_defaults(func=cmd_results)


# -- handlers ---------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    settings = load_settings(
        token_file=args.token_file, host=args.host, port=args.port, work_dir=args.work_dir,
        data_roots=tuple(args.data_root), max_queue=args.max_queue, workers=args.workers,
        max_upload_bytes=int(args.max_upload_mb * (1 << 20)),
        max_tile_batch=args.max_tile_batch, tile_backend=args.tile_backend, model=args.model,
        package=args.package, threads=args.threads, power_sensor=not args.no_power_sensor)
    missing = [m for m in WEB_MODULES if not _importable(m)]
    if missing:
        raise SarvesselError(f"serve needs {', '.join(missing)}, which is not installed here: "
                             "pip install 'sarvessel[serve]'")
    import uvicorn

    from sarvessel.runtime.server.app import create_app

    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None,
                            timeout_graceful_shutdown=int(settings.graceful_timeout_s) or None,
                            access_log=False)
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 2


def cmd_submit(args: argparse.Namespace) -> int:
    client = _client(args)
    options = {"backend": args.backend.value, "tta": args.tta}
    if args.conf is not None:
        options["conf_threshold"] = args.conf
    if args.power_budget is not None:
        options["power_budget_w"] = args.power_budget
    if args.upload:
        job = client.upload(args.scene, **options)
    else:
        job = client.submit(args.scene, **options)
    print(job["id"])
    if not args.wait:
        return 0
    return _finish(client, job["id"], args.out, None)


def cmd_results(args: argparse.Namespace) -> int:
    client = _client(args)
    if not args.job:
        for j in client.jobs():
            p = j["progress"]
            print(f"{j['id']}  {j['state']:9s}  {j['scene_id']}  "
                  f"{p['tiles_done']}/{p['tiles_total']} tiles"
                  + (f"  {j['detections']} detections" if j["detections"] is not None else ""))
        return 0
    kinds = None if args.kind == "all" else (args.kind,)
    if args.wait:
        return _finish(client, args.job, args.out, kinds)
    job = client.job(args.job)
    if job["state"] != "done":
        print(_describe(job))
        return 0 if job["state"] in ("queued", "running") else 1
    return _save(client, job, args.out, kinds)


# -- helpers ----------------------------------------------------------------------------------


def _add_server_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("server")
    g.add_argument("--server", default=os.environ.get(SERVER_ENV),
                   help=f"server URL (default ${SERVER_ENV}, else http://127.0.0.1:"
                   f"{DEFAULT_PORT})")
    g.add_argument("--token-file", type=Path,
                   help=f"file holding the bearer token (default ${TOKEN_ENV})")


def _client(args: argparse.Namespace):  # -> ServerClient
    from sarvessel.runtime.server.client import DEFAULT_URL, ServerClient

    token = read_token(args.token_file, os.environ)
    return ServerClient(args.server or DEFAULT_URL, token=token)


def _finish(client, job_id: str, out: Path, kinds: tuple[str, ...] | None) -> int:
    last = [""]

    def show(job: dict) -> None:
        line = _describe(job)
        if line != last[0] and sys.stderr.isatty():
            print(line, file=sys.stderr)
        last[0] = line

    job = client.wait(job_id, progress=show)
    if job["state"] != "done":
        print(_describe(job), file=sys.stderr)
        return 1
    return _save(client, job, out, kinds)


def _save(client, job: dict, out: Path, kinds: tuple[str, ...] | None) -> int:
    paths = client.download(job["id"], out, kinds)
    print(f"{job['id']}: {job['detections']} detections")
    for kind, path in paths.items():
        print(f"  {kind:8s} {path}")
    return 0


def _describe(job: dict) -> str:
    p = job["progress"]
    parts = [f"{job['id']} {job['state']}", f"{p['tiles_done']}/{p['tiles_total']} tiles"]
    if p.get("mpx_per_s"):
        parts.append(f"{p['mpx_per_s']:.2f} MPx/s")
    if p.get("eta_s") is not None and job["state"] == "running":
        parts.append(f"ETA {p['eta_s']:.0f} s")
    if job.get("watts") is not None:
        parts.append(f"{job['watts']:.1f} W")
    if job.get("error"):
        parts.append(f"error: {job['error']}")
    return ", ".join(parts)


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
