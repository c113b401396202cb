"""`torchyard operator run` and `torchyard dev-cluster` (see cli/main.py for the layout).

Try the operator on the project's own control plane (`make cluster`), in three terminals:

    export KUBECONFIG=.cluster/admin.kubeconfig
    torchyard dev-cluster --volumes runs/            # a node running pods as local processes
    torchyard operator run --metrics-port 8080
    kubectl apply -f examples/trainjob.yaml

On a Slurm login node, `torchyard operator run --backend slurm --submit-dir DIR` submits the same objects
through sbatch instead of creating pods (operator/slurm/backend.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shutil
import signal
from pathlib import Path

from torchyard.operator.cli.help import add_command


def register(commands: argparse._SubParsersAction) -> None:
    operator = add_command(commands, "operator", "the Kubernetes operator for TrainJob/TestJob",
                           "torchyard operator run --namespace team-a --metrics-port 8080")
    actions = operator.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = add_command(actions, "run", "run the operator (kubeconfig or in-cluster credentials)",
                      "torchyard operator run --namespace team-a --metrics-port 8080",
                      "torchyard operator run --backend slurm --slurm-work-root /shared/{namespace}")
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
        "works; see operator/slurm/backend.py)",
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
    run.add_argument(
        "--trust-job-specs",
        action="store_true",
        help="create pods for specs naming a ServiceAccount, claim, pull Secret, PriorityClass, toleration "
        "or TrainJob even where no admission policy checked that their creator may use them (the chart's "
        "jobPolicy); only where everyone who may create jobs may use all of these",
    )
    run.add_argument(
        "--slurm-work-root",
        action="append",
        default=[],
        metavar="DIR",
        help="with --backend slurm: an absolute folder under which specs may name work dirs, checkpoints "
        "and configs (repeatable; {namespace} becomes the job's namespace, e.g. /scratch/{namespace}); "
        "default: none, every path is relative to work_dirs/<namespace>/",
    )
    run.add_argument(
        "--slurm-allow-option",
        action="append",
        default=[],
        metavar="OPTION",
        help="with --backend slurm: also accept this sbatch option in spec.slurm.extraArgs (repeatable, "
        "e.g. --slurm-allow-option=--reservation); the default list only shapes the allocation",
    )
    run.set_defaults(func=operator_run)

    dev = add_command(commands, "dev-cluster",
                      "a node that runs pods as local processes, for any API server (see `make cluster`)",
                      "make cluster && export KUBECONFIG=.cluster/admin.kubeconfig && torchyard dev-cluster")
    dev.description = ("Registers a Node with the API server of your kubeconfig (or $KUBECONFIG), keeps it "
                       "Ready, and runs the pods the scheduler binds to it as local processes.")
    dev.add_argument("--node", default="dev-cluster", help="the Node's name (default dev-cluster)")
    for flag, meta, what in (
        ("--label", "KEY=VALUE", "a label of the Node (repeatable), e.g. for pods' nodeSelector"),
        ("--taint", "KEY[=VALUE]:EFFECT", "a taint of the Node (repeatable): only pods tolerating it land"),
    ):
        dev.add_argument(flag, action="append", default=[], metavar=meta, help=what)
    for flag, default, what in (
        ("--volumes", Path("dev-cluster/volumes"), "PersistentVolumeClaims live here as DIR/<claimName>"),
        ("--state", Path("dev-cluster/state"), "pod logs, pids and termination messages"),
        ("--workdir", Path.cwd(), "the pods' processes run here (where configs/ is); default: here"),
    ):
        dev.add_argument(flag, type=Path, default=default, metavar="DIR", help=what)
    dev.set_defaults(func=dev_cluster)


def operator_run(args: argparse.Namespace) -> int:
    import kopf

    from torchyard.operator.control.handlers import build_registry, memo_for
    from torchyard.operator.control.loop import Backend, OperatorConfig

    kopf.configure(
        verbose=args.verbose, log_format=kopf.LogFormat.JSON if args.json_logs else kopf.LogFormat.FULL
    )
    config = OperatorConfig(namespaces=list(args.namespace), metrics_port=args.metrics_port)
    if args.backend == "slurm":
        from torchyard.operator.slurm.backend import SlurmBackend

        if shutil.which("sbatch") is None:
            raise SystemExit(
                "torchyard operator run --backend slurm: sbatch not found on PATH; run it where Slurm's "
                "commands work (a login node), or install them (Debian: apt-get install slurm-client)"
            )
        from torchyard.operator.slurm.policy import DEFAULT_OPTIONS, SlurmPolicy

        policy = SlurmPolicy(tuple(args.slurm_work_root), DEFAULT_OPTIONS + tuple(args.slurm_allow_option))
        backend: Backend = SlurmBackend(args.submit_dir.resolve(), args.poll_seconds, policy=policy)
    else:
        from torchyard.operator.kube.backend import PodBackend

        backend = PodBackend(trust_job_specs=args.trust_job_specs)
    kopf.run(
        registry=build_registry(backend),
        memo=memo_for(config, backend),
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

    from torchyard.operator.control.kubeapi import KubeApi
    from torchyard.operator.dev.agent import Runner
    from torchyard.operator.dev.node import NodeHeartbeat, node_manifest, parse_taint

    labels = dict(_key_value(item) for item in args.label)
    try:
        taints = [parse_taint(item) for item in args.taint]
    except ValueError as err:
        raise SystemExit(f"torchyard dev-cluster: --taint: {err}") from None
    def login() -> kopf.ConnectionInfo | None:
        logger = logging.getLogger("dev-cluster")
        return kopf.login_via_client(logger=logger, settings=kopf.OperatorSettings())

    info = login()
    async with contextlib.AsyncExitStack() as stack:
        api = KubeApi(info, login=login)
        stack.push_async_callback(api.close)
        node = await stack.enter_async_context(NodeHeartbeat(api, node_manifest(args.node, labels, taints)))
        runner = Runner(api, args.volumes.resolve(), args.state.resolve(), args.node, args.workdir)
        stack.push_async_callback(runner.stop)
        print(f"dev-cluster: node {args.node} is Ready at {info.server}; pod logs: {args.state}/", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        watch = asyncio.ensure_future(runner.run())
        stopped = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait(
            [watch, stopped, runner.failed, node.failed], return_when=asyncio.FIRST_COMPLETED
        )
        for task in (watch, stopped):
            task.cancel()
        for task in done:
            if task is not stopped and not task.cancelled() and task.exception() is not None:
                raise SystemExit(f"torchyard dev-cluster: node {args.node} stops: {task.exception()}")


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"torchyard dev-cluster: --label {text!r} must be KEY=VALUE")
    return key, value
