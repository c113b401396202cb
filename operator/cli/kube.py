"""`torchyard submit | status | logs | cancel | list`: job files on Kubernetes, as `torchyard slurm ...` does
them on Slurm, through the cluster of your kubeconfig (client.py; the operator runs the jobs).

    torchyard submit examples/trainjob.yaml --wait      # prints the job names; --follow: node 0's log too
    torchyard status digits-mlp
    torchyard logs -f digits-mlp --node 1
    torchyard logs --previous digits-mlp --node 1     # what the failed node said before the gang restarted
    torchyard cancel digits-mlp
    torchyard list -n team-a

Job names go to stdout, everything else to stderr. Exit codes: 0 done (with --wait: the job Succeeded),
1 an API error or a job that failed, 2 a bad file or request.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import wraps

from torchyard.operator.api.spec import Phase
from torchyard.operator.cli.help import add_command
from torchyard.operator.client import STARTED, Client
from torchyard.operator.errors import ApiError, ClientError


def register(commands: argparse._SubParsersAction) -> None:
    submit = add_command(commands, "submit", "create every job in FILE on Kubernetes; print their names",
                         "torchyard submit examples/trainjob.yaml --wait")
    submit.add_argument("file", metavar="FILE", help="a YAML file of one or more TrainJobs/TestJobs")
    submit.add_argument("--wait", action="store_true", help="wait until each job ends; exit 0 if Succeeded")
    submit.add_argument("--follow", action="store_true", help="like --wait, printing node 0's log")

    status = add_command(commands, "status", "phase, conditions, restarts, metrics and checkpoints of a job",
                         "torchyard status digits-mlp")
    logs = add_command(commands, "logs", "print the log of one node's pod (node 0 unless --node)",
                       "torchyard logs digits-mlp --follow")
    logs.add_argument("--node", type=int, default=0, metavar="N", help="which node's pod (0: rank 0)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the pod ends")
    logs.add_argument("-p", "--previous", action="store_true",
                      help="the end of the log of the last failed attempt, kept when the gang restarted")
    cancel = add_command(commands, "cancel", "delete the job; the operator stops its pods",
                         "torchyard cancel digits-mlp")
    listing = add_command(commands, "list", "the TrainJobs and TestJobs of a namespace", "torchyard list")
    for parser in (status, logs, cancel):
        parser.add_argument("name", metavar="NAME", help="the job's name (metadata.name)")
        parser.add_argument("--kind", choices=("TrainJob", "TestJob"),
                            help="which kind, when a TrainJob and a TestJob share the name")  # fmt: skip
    for parser, func in ((submit, submit_command), (status, status_command), (logs, logs_command),
                         (cancel, cancel_command), (listing, list_command)):  # fmt: skip
        parser.add_argument("-n", "--namespace", help="the namespace (default: the kubeconfig context's)")
        parser.add_argument("--kubeconfig", help="the kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
        parser.set_defaults(func=_kube(func))


def _kube(func: Callable) -> Callable[[argparse.Namespace], int]:
    @wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args, Client(args.namespace, args.kubeconfig))
        except ApiError as err:
            _say(args, err.message)
            return 1
        except ClientError as err:
            _say(args, str(err))
            return 2

    return run


def _say(args: argparse.Namespace, message: str) -> None:
    print(f"torchyard {args.command}: {message}", file=sys.stderr, flush=True)


def submit_command(args: argparse.Namespace, client) -> int:
    names = client.submit(args.file)
    for name in names:
        print(name, flush=True)
    _say(args, f"created {', '.join(names)} in namespace {client.namespace}; `torchyard status NAME` follows")
    if not (args.wait or args.follow):
        return 0
    code = 0
    for name in names:
        if args.follow:
            client.wait(name, until=STARTED)
            for line in client.follow(name):
                sys.stdout.write(line)
        status = client.wait(name)
        _say(args, f"{name}: {status.phase.value}{_why(status)}")
        code = max(code, 0 if status.phase is Phase.SUCCEEDED else 1)
    return code


def _why(status) -> str:
    ends = ("Failed", "Succeeded")
    ended = next((c for c in status.conditions if c.type in ends and c.status == "True"), None)
    return f" ({ended.reason}: {ended.message})" if ended is not None else ""


def status_command(args: argparse.Namespace, client) -> int:
    job = client.get(args.name, args.kind)
    status = client.status(args.name, job.kind)
    rows = [
        ("job", f"{job.kind} {client.namespace}/{job.metadata.name}"),
        ("phase", status.phase.value),
        ("nodes", f"{job.spec.nodes} x {job.spec.nproc_per_node} process(es); active {status.active}, "
                  f"succeeded {status.succeeded}, failed {status.failed}"),
        ("restarts", f"{status.restarts} (of backoffLimit {job.spec.backoff_limit}; "
                     f"{status.disruptions} after evictions)"),
        ("started", status.start_time or "(not yet)"),
        ("finished", status.completion_time or "(not yet)"),
    ]
    rows += [(f"{c.type}", f"{c.status} {c.reason}: {c.message}") for c in status.conditions]
    if status.metrics:
        rows.append(("metrics", "  ".join(f"{k}: {v:.4g}" for k, v in status.metrics.items())))
    for key in ("last_checkpoint", "best_checkpoint", "checkpoint"):
        value = getattr(status, key, None)
        if value:
            rows.append((key.replace("_", " "), value))
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


def logs_command(args: argparse.Namespace, client) -> int:
    if args.previous:
        if args.follow:
            raise ClientError("--previous prints what was kept of a finished attempt: drop --follow")
        sys.stdout.write(client.previous_logs(args.name, args.node, args.kind))
    elif args.follow:
        for line in client.follow(args.name, args.node, args.kind):
            sys.stdout.write(line)
    else:
        sys.stdout.write(client.logs(args.name, args.node, args.kind))
    return 0


def cancel_command(args: argparse.Namespace, client) -> int:
    client.cancel(args.name, args.kind)
    _say(args, f"deleted {args.name} in namespace {client.namespace}; the operator stops its pods")
    return 0


def list_command(args: argparse.Namespace, client) -> int:
    header = ("KIND", "NAME", "PHASE", "NODES", "RESTARTS", "CREATED", "METRIC")
    rows = [header] + [(r.kind, r.name, r.phase, str(r.nodes), str(r.restarts), r.created, r.headline)
                       for r in client.list()]  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  ".join(value.ljust(width) for value, width in zip(r, widths, strict=True)).rstrip())
    return 0
