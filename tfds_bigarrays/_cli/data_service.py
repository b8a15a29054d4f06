"""`tfds-bigarrays data-service`: run tf.data service servers from the shell.

A trainer reads through them with `read_options(data_service="grpc://...")`
(or TFDS_BIGARRAYS_DATA_SERVICE): reading and decoding then run in the
worker processes, on this or other machines, instead of the trainer's CPUs.
These are TensorFlow's own `DispatchServer` and `WorkerServer`; this command
only starts them with sensible flags and keeps them running until killed.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading


def add_parser(sub) -> None:
    from tfds_bigarrays._cli.common import subcommand

    service = subcommand(
        sub,
        "data-service",
        help="Run a tf.data service dispatcher or worker (decode on other CPUs).",
        description=(
            "Run TensorFlow's tf.data service servers. Start one dispatcher and some "
            "workers (each worker must see the dataset files at the same paths), then "
            "read with TFDS_BIGARRAYS_DATA_SERVICE=grpc://HOST:PORT or "
            "tfds_bigarrays.read_options(data_service=...)."
        ),
        examples=[
            "tfds-bigarrays data-service dispatcher --port 5050",
            "tfds-bigarrays data-service worker --dispatcher HEAD:5050 --host $(hostname)",
        ],
    )
    service_sub = service.add_subparsers(
        dest="service_command", required=True, metavar="{dispatcher,worker}"
    )
    d = subcommand(
        service_sub,
        "dispatcher",
        help="Run the dispatcher (one per job).",
        examples=["tfds-bigarrays data-service dispatcher --port 5050 --work-dir /tmp/dispatcher"],
    )
    d.add_argument("--port", type=int, default=5050, help="port to listen on (default 5050)")
    d.add_argument(
        "--work-dir",
        help="folder for the dispatcher's journal, so that a restarted dispatcher "
        "resumes its jobs (default: none, state is lost on restart)",
    )
    d.set_defaults(func=_run_dispatcher)
    w = subcommand(
        service_sub,
        "worker",
        help="Run a worker that reads and decodes.",
        examples=["tfds-bigarrays data-service worker --dispatcher localhost:5050"],
    )
    w.add_argument(
        "--dispatcher",
        required=True,
        metavar="HOST:PORT",
        help="the dispatcher's address, e.g. localhost:5050",
    )
    w.add_argument("--port", type=int, default=0, help="port to listen on (default: any free)")
    w.add_argument(
        "--host",
        default="localhost",
        help="name by which trainers reach this worker (default localhost)",
    )
    w.set_defaults(func=_run_worker)


def _dispatcher_address(text: str) -> str:
    from tfds_bigarrays._cli.common import UsageError

    address = text.split("://", 1)[-1]
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(
            f"--dispatcher {text!r} is not HOST:PORT; give the dispatcher's address, "
            "e.g. --dispatcher localhost:5050."
        )
    return address


def _serve(server, what: str) -> int:
    """Prints where the server listens, then blocks until SIGTERM/SIGINT."""
    stop = threading.Event()
    # Before the address is printed: whoever reads it may signal at once.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        print(f"tfds-bigarrays data-service: {what}", flush=True)
        stop.wait()
    finally:
        server.stop()  # its gRPC threads would otherwise keep the process alive
    return 0


def _run_dispatcher(args: argparse.Namespace) -> int:
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # a dispatcher never computes
    import tensorflow as tf

    from tfds_bigarrays._read import op

    op.library()  # it reads the graphs of the jobs, which use our ops

    config = tf.data.experimental.service.DispatcherConfig(
        port=args.port,
        work_dir=args.work_dir,
        fault_tolerant_mode=args.work_dir is not None,
    )
    server = tf.data.experimental.service.DispatchServer(config)
    return _serve(server, f"dispatcher at {server.target}")


def _run_worker(args: argparse.Namespace) -> int:
    dispatcher = _dispatcher_address(args.dispatcher)
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # workers decode on CPUs
    import tensorflow as tf

    from tfds_bigarrays._read import op

    op.library()  # the pipelines it runs check and decode with our ops

    config = tf.data.experimental.service.WorkerConfig(
        dispatcher_address=dispatcher,
        worker_address=f"{args.host}:%port%",
        port=args.port,
    )
    server = tf.data.experimental.service.WorkerServer(config)
    return _serve(server, f"worker of {dispatcher} on port {server._address.rsplit(':', 1)[-1]}")  # noqa: SLF001
