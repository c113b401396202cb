"""`torchyard operator run` and `torchyard dev-cluster` (see cli.py for the layout).

Try the operator without a cluster, in three terminals:

    torchyard dev-cluster --emulator --port 8001 --kubeconfig dev.kubeconfig --volumes runs/
    KUBECONFIG=dev.kubeconfig torchyard operator run --metrics-port 8080
    KUBECONFIG=dev.kubeconfig kubectl apply -f examples/trainjob.yaml   # or any API client

On a Slurm login node, `torchyard operator run --backend slurm --submit-dir DIR` submits the same objects
through sbatch instead of creating pods (operator/slurm_operator.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shutil
import signal
from pathlib import Path

import yaml


def register(commands: argparse._SubParsersAction) -> None:
    operator = commands.add_parser("operator", help="the Kubernetes operator for TrainJob/TestJob")
    actions = operator.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = actions.add_parser("run", help="run the operator (kubeconfig or in-cluster credentials)")
    run.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable; glob patterns work); default: cluster-wide",
    )
    run.add_argument("--metrics-port", type=int, metavar="PORT", help="serve /metrics and /healthz here")
    run.add_argument("--json-logs", action="store_true", help="structured JSON logs")
    run.add_argument(
        "--peering",
        metavar="NAME",
        help="kopf peering object: of several replicas, one acts "
        "(needs kopf's peering CRDs); default: standalone",
    )
    run.add_argument("--priority", type=int, default=0, help="peering priority of this replica")
    run.add_argument("--verbose", "-v", action="store_true", help="debug logs")
    run.add_argument(
        "--backend",
        choices=("pods", "slurm"),
        default="pods",
        help="pods: run jobs as pods (default); slurm: submit them through sbatch (run this where sbatch "
        "works; see operator/slurm_operator.py)",
    )
    run.add_argument(
        "--submit-dir",
        type=Path,
        default=Path.cwd(),
        metavar="DIR",
        help="with --backend slurm: submit from here (configs, work dirs are relative to it); default: here",
    )
    run.add_argument(
        "--poll-seconds",
        type=float,
        default=10.0,
        metavar="S",
        help="with --backend slurm: look at each job's Slurm state this often (default 10)",
    )
    run.set_defaults(func=operator_run)

    dev = commands.add_parser(
        "dev-cluster",
        help="run pods as local processes (a kubelet stand-in), optionally with an in-process API emulator",
    )
    dev.add_argument(
        "--emulator",
        action="store_true",
        help="serve a Kubernetes API emulator (needs kmock) instead of using your kubeconfig",
    )
    dev.add_argument("--port", type=int, default=8001, help="emulator port (default 8001)")
    dev.add_argument(
        "--kubeconfig", type=Path, metavar="FILE", help="with --emulator: write a kubeconfig here"
    )
    dev.add_argument(
        "--volumes",
        type=Path,
        default=Path("dev-cluster/volumes"),
        metavar="DIR",
        help="PersistentVolumeClaims live here as DIR/<claimName>",
    )
    dev.add_argument(
        "--state",
        type=Path,
        default=Path("dev-cluster/state"),
        metavar="DIR",
        help="pod logs, pids and termination messages",
    )
    dev.add_argument(
        "--workdir",
        type=Path,
        default=Path.cwd(),
        metavar="DIR",
        help="working directory of the pods' processes (where configs/ is); default: here",
    )
    dev.add_argument("--namespace", "-n", help="only run pods of this namespace")
    dev.set_defaults(func=dev_cluster)


def operator_run(args: argparse.Namespace) -> int:
    import kopf

    from torchyard.operator.controller import OperatorConfig
    from torchyard.operator.handlers import build_registry, memo_for

    kopf.configure(
        verbose=args.verbose, log_format=kopf.LogFormat.JSON if args.json_logs else kopf.LogFormat.FULL
    )
    config = OperatorConfig(namespaces=list(args.namespace), metrics_port=args.metrics_port)
    if args.backend == "slurm":
        from torchyard.operator.slurm_operator import SlurmConfig, build_slurm_registry, slurm_memo

        if shutil.which("sbatch") is None:
            raise SystemExit(
                "torchyard operator run --backend slurm: sbatch not found on PATH; run it where Slurm's "
                "commands work (a login node), or install them (Debian: apt-get install slurm-client)"
            )
        slurm = SlurmConfig(submit_dir=args.submit_dir.resolve(), poll_seconds=args.poll_seconds)
        registry, memo = build_slurm_registry(), slurm_memo(config, slurm)
    else:
        registry, memo = build_registry(), memo_for(config)
    kopf.run(
        registry=registry,
        memo=memo,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=args.priority,
    )
    return 0


def dev_cluster(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_dev_cluster(args))
    return 0


async def _dev_cluster(args: argparse.Namespace) -> None:
    import kopf

    from torchyard.operator.devcluster import Runner
    from torchyard.operator.kube import KubeApi

    async with contextlib.AsyncExitStack() as stack:
        if args.emulator:
            try:
                import kmock

                from torchyard.operator.emulator import Emulator, kubeconfig
            except ImportError as err:
                raise SystemExit(
                    f"torchyard dev-cluster --emulator needs kmock: pip install kmock==0.8 ({err})"
                ) from None
            emulator = await stack.enter_async_context(Emulator())
            server = await stack.enter_async_context(kmock.Server(emulator, port=args.port))
            url = f"http://127.0.0.1:{server.port}"
            info = kopf.ConnectionInfo(server=url)
            if args.kubeconfig:
                args.kubeconfig.write_text(yaml.safe_dump(kubeconfig(url)))
            print(
                f"dev-cluster: API emulator at {url}"
                + (f"; export KUBECONFIG={args.kubeconfig}" if args.kubeconfig else ""),
                flush=True,
            )
        else:
            info = kopf.login_via_client(
                logger=logging.getLogger("dev-cluster"), settings=kopf.OperatorSettings()
            )
        api = KubeApi(info)
        stack.push_async_callback(api.close)
        runner = Runner(api, args.volumes.resolve(), args.state.resolve(), args.namespace, args.workdir)
        stack.push_async_callback(runner.stop)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(runner.run())
        await stop.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
