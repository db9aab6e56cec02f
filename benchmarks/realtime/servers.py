"""Starting the product (services mode) and the naive baseline, each under its own process group."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from benchmarks import services
from benchmarks.realtime import profile as profiler
from benchmarks.services import ROOT, Stack, log


# ----------------------------------------------------------------------------- servers
def worker_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill in what `start_product` reads beyond `services.add_product_arguments`, at the worker's
    own defaults (for the benchmarks that do not compare worker settings); returns ``args``."""
    args.worker_torch_threads = 1
    args.worker_lone_threads = os.cpu_count() or 1
    args.batch_size = 16
    args.batch_wait_ms = 2.0
    args.profile = None
    args.product_env = getattr(args, "product_env", [])
    return args


def start_product(args: argparse.Namespace, stack: Stack, bundle: Path) -> tuple[str, str]:
    database_url = services.recreate_database(args.postgres, args.database)
    media = stack.workdir / "media"
    media.mkdir(exist_ok=True)
    env = services.product_env(
        database_url=database_url,
        broker=args.broker,
        bundle=bundle,
        media=media,
        **services.worker_settings(args),
        **dict(args.product_env),
    )
    log(f"product: database {args.database}, migrating")
    token = services.create_token(env, "realtimebench")
    port = services.free_port()
    start_profiled(
        stack,
        "product-web",
        [sys.executable, "-m", "gunicorn", "webapp.asgi:application", "--worker-class", "uvicorn_worker.UvicornWorker",
         "--bind", f"127.0.0.1:{port}", "--workers", str(args.web_workers), "--timeout", "120",
         "--keep-alive", "30", "--graceful-timeout", "5", "--log-level", "warning"],
        env,
        args.profile,
    )  # fmt: skip
    start_profiled(
        stack, "worker", services.worker_command(args.worker_concurrency, f"realtime-{port}"), env, args.profile
    )
    base_url = f"http://127.0.0.1:{port}"
    services.wait_http(f"{base_url}/api/v1/schema/", 120, stack)
    services.wait_worker_ready(stack, 180)
    return base_url, token


def start_profiled(stack: Stack, name: str, cmd: list[str], env: dict[str, str], profile: Path | None) -> None:
    """``cmd`` as it is, or under py-spy when ``--profile DIR`` is given (stopped with SIGINT so
    that py-spy writes its samples; `benchmarks.realtime.profile`)."""
    if profile is None:
        stack.start(name, cmd, env)
    else:
        stack.start(name, profiler.wrap(cmd, profile, name), env, stop_signal=signal.SIGINT)


def start_naive(args: argparse.Namespace, stack: Stack, bundle: Path) -> str:
    env = {
        **os.environ,
        "MODEL_BUNDLE": str(bundle),
        "WORKER_TORCH_THREADS": str(args.torch_threads),
        "OMP_NUM_THREADS": str(args.torch_threads),
        "PYTHONPATH": str(ROOT),
    }
    port = services.free_port()
    stack.start(
        "naive-web",
        [sys.executable, "-m", "gunicorn", "benchmarks.naive_app:application", "--bind", f"127.0.0.1:{port}",
         "--workers", str(args.naive_workers), "--threads", str(args.naive_threads), "--worker-class", "gthread",
         "--timeout", "120", "--keep-alive", "30", "--graceful-timeout", "5", "--log-level", "warning"],
        env,
    )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    services.wait_http(f"{base_url}/", 120, stack)  # answers 404 JSON: up
    return base_url
