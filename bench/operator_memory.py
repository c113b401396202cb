"""Operator memory on the real control plane: the RSS of `torchyard operator run` serving many large jobs.

    .venv/bin/python bench/operator_memory.py --jobs 200 --nodes 64     # the issue's scale: --jobs 1000

One operator process (`torchyard operator run --namespace NS`, as the Helm chart's ServiceAccount, as in
bench/operator_latency.py) serves one namespace. The bench creates `--jobs` TrainJobs of `--nodes` pods, 20
creates at a time, and after each tenth of them waits until every pod of those jobs exists, then reads
the operator's VmRSS and VmHWM (peak) from /proc. Last, one job of the CRD's maximum, 4096 nodes, the size
that once rendered every pod at once. The pods name a scheduler nobody runs (`schedulerName`), so they stay
Pending: what is measured is the operator's bookkeeping of pods, not a scheduler's churn.

Baselines, same run: the operator before any job (idle), and the kube-apiserver, which holds the same pods
(its VmRSS growth over the run, per pod). Goal (issue): memory stays flat, far under the chart's 512 MiB
limit, with 1,000 jobs of 64 nodes. Nothing asserts on it. The table is printed and written to
bench/results.md, replacing that file's ``## operator_memory`` section. The namespace goes at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from torchyard.operator.api.spec import MAX_NODES
from torchyard.operator.control.kubeapi import KubeApi, resource_path
from torchyard.operator.errors import ApiError

from operator_latency import (  # isort: skip
    REPO,
    TRAINJOBS,
    Method,
    ensure_chart,
    grant_namespace_watch,
    job_create,
    plane_pids,
    start_plane,
    start_torchyard,
    trainjob,
    until_default_account,
    write_section,
)

SECTION = "## operator_memory"
UNSCHEDULED = "torchyard-bench-unscheduled"  # no scheduler has this name: the pods stay Pending
CONCURRENT_CREATES = 20
POD_WAIT_SECONDS = 1800.0


@dataclass
class Sample:
    jobs: int
    pods: int
    operator_rss: float  # MiB
    operator_peak: float
    apiserver_rss: float
    seconds: float  # since the first create


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    largest: Sample | None = None


def status_mib(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/{pid}/status")


def big_job(name: str, namespace: str, nodes: int) -> dict:
    job = trainjob(name, namespace)
    job["spec"] |= {"nodes": nodes, "schedulerName": UNSCHEDULED}
    return job


async def pod_count(api: KubeApi, namespace: str) -> int:
    """How many pods exist, from one page of one: the server counts the rest."""
    page = await api.request("GET", resource_path("v1", "pods", namespace), limit=1)
    return len(page.get("items") or []) + int((page.get("metadata") or {}).get("remainingItemCount") or 0)


async def until_pods(api: KubeApi, namespace: str, count: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + POD_WAIT_SECONDS
    while (found := await pod_count(api, namespace)) < count:
        if proc.poll() is not None:
            raise RuntimeError(f"the operator exited with {proc.returncode} at {found} of {count} pods")
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {found} of {count} pods after {POD_WAIT_SECONDS:.0f} s")
        await asyncio.sleep(1)


async def measure(args: argparse.Namespace) -> Run:
    plane = await asyncio.to_thread(start_plane, args.cluster_dir)
    api = KubeApi(plane.admin())
    await ensure_chart(plane, api)
    namespace = f"bench-mem-{secrets.token_hex(3)}"
    tmp = Path(tempfile.mkdtemp(prefix="operator-memory-"))
    method = Method("torchyard", "torchyard", namespace, job_create(api, namespace, TRAINJOBS, trainjob))
    run = Run()
    try:
        await api.create(resource_path("v1", "namespaces"), {"metadata": {"name": namespace}})
        await until_default_account(api, namespace)
        await grant_namespace_watch(api, namespace)
        await start_torchyard(plane, api, method, tmp)
        apiserver = plane_pids(plane)["kube-apiserver"]
        await asyncio.sleep(3)
        started = time.monotonic()

        def sample(jobs: int, pods: int) -> Sample:
            pid = method.proc.pid
            rss, peak = status_mib(pid, "VmRSS"), status_mib(pid, "VmHWM")
            found = Sample(jobs, pods, rss, peak, status_mib(apiserver, "VmRSS"), time.monotonic() - started)
            say(f"{jobs} jobs, {pods} pods: operator {rss:.0f} MiB (peak {peak:.0f}), "
                f"kube-apiserver {found.apiserver_rss:.0f} MiB")  # fmt: skip
            return found

        run.samples.append(sample(0, 0))
        gate = asyncio.Semaphore(CONCURRENT_CREATES)

        async def create(i: int) -> None:
            async with gate:
                job = big_job(f"job-{i}", namespace, args.nodes)
                await api.create(resource_path(*TRAINJOBS, namespace), job)

        step = max(1, args.jobs // 10)
        for first in range(0, args.jobs, step):
            last = min(args.jobs, first + step)
            await asyncio.gather(*(create(i) for i in range(first, last)))
            await until_pods(api, namespace, last * args.nodes, method.proc)
            run.samples.append(sample(last, last * args.nodes))
        if args.largest:
            await api.create(resource_path(*TRAINJOBS, namespace), big_job("largest", namespace, MAX_NODES))
            total = args.jobs * args.nodes + MAX_NODES
            await until_pods(api, namespace, total, method.proc)
            run.largest = sample(args.jobs + 1, total)
    finally:
        say("cleaning up (the namespace's pods take a while to go)")
        if method.proc and method.proc.poll() is None:
            method.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                method.proc.wait(30)
        with contextlib.suppress(ApiError):
            await api.delete(resource_path("v1", "namespaces", None, namespace))
        for plural in ("clusterrolebindings", "clusterroles"):
            with contextlib.suppress(ApiError):
                await api.delete(resource_path("rbac.authorization.k8s.io/v1", plural, None, namespace))
        (tmp / "torchyard.kubeconfig").unlink(missing_ok=True)
        await api.close()
    return run


def report(args: argparse.Namespace, run: Run) -> str:
    idle, full = run.samples[0], run.samples[-1]
    pods = max(full.pods, 1)
    grew = (full.operator_rss - idle.operator_rss) * 1024 / pods
    apiserver_grew = (full.apiserver_rss - idle.apiserver_rss) * 1024 / pods
    header = (
        "Real control plane (scripts/cluster/up.sh), one `torchyard operator run --namespace NS` as the "
        f"chart's ServiceAccount; {args.jobs} TrainJobs of {args.nodes} nodes created "
        f"{CONCURRENT_CREATES} at a time, pods left Pending (a scheduler nobody runs). RSS read from /proc "
        "once every pod of each tenth of the jobs exists."
    )
    lines = [
        SECTION,
        "",
        header,
        f"Command: `.venv/bin/python bench/operator_memory.py --jobs {args.jobs} --nodes {args.nodes}`",
        "",
        "| jobs | pods | operator RSS (MiB) | operator peak (MiB) | kube-apiserver RSS (MiB) | s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for s in [*run.samples, *([run.largest] if run.largest else [])]:
        lines.append(
            f"| {s.jobs} | {s.pods} | {s.operator_rss:.0f} | {s.operator_peak:.0f} | {s.apiserver_rss:.0f} | "
            f"{s.seconds:.0f} |"
        )
    ratio = full.operator_rss / idle.operator_rss
    lines += [
        "",
        f"- operator at {full.pods} pods vs idle, same run: {full.operator_rss:.0f} / "
        f"{idle.operator_rss:.0f} MiB = {ratio:.2f}x; {grew:.1f} KiB per pod, against the kube-apiserver's "
        f"{apiserver_grew:.1f} KiB per pod for the same pods ({grew / apiserver_grew:.2f}x of it).",
        f"- peak {max(s.operator_peak for s in run.samples):.0f} MiB; the chart's limit is 512 MiB.",
    ]
    if run.largest:
        largest = run.largest
        lines.append(
            f"- one job of {MAX_NODES} nodes on top: operator {largest.operator_rss:.0f} MiB, peak "
            f"{largest.operator_peak:.0f} MiB (its pods created 50 a pass)."
        )
    return "\n".join(lines) + "\n"


def say(text: str) -> None:
    print(f"operator_memory: {time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="TrainJobs to create (the issue's: 1000)")
    parser.add_argument("--nodes", type=int, default=64, help="pods per TrainJob")
    parser.add_argument("--no-largest", dest="largest", action="store_false",
                        help=f"skip the last job of {MAX_NODES} nodes")  # fmt: skip
    parser.add_argument("--cluster-dir", type=Path, default=REPO / ".cluster", help="scripts/cluster/up.sh's")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/results.md alone")
    args = parser.parse_args(argv)
    text = report(args, asyncio.run(measure(args)))
    print(text, end="")
    if not args.no_write:
        write_section(text, SECTION)


if __name__ == "__main__":
    main()
