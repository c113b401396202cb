"""Operator latency: create-to-all-pods for one TrainJob at a time and for a burst, against the emulator.

    .venv/bin/python bench/operator_latency.py            # --single 30 --burst 200 --nodes 2

The API emulator (operator/emulator.py, kmock) runs in this process; the operator runs as its own process
(`torchyard operator run`, as a user starts it) so its CPU time can be read from /proc. A pod watch here
notes when each pod appears. Measured:

1. single: create one TrainJob, wait until all its pods exist; repeated, p50/p95 of create-to-all-pods;
2. burst: create --burst TrainJobs at once (--nodes pods each); time until every pod exists;
3. baseline: the same creates with no operator (the job, its Service and its pods, as plain API calls
   from here), i.e. what the emulator itself costs; the ratio shows the operator's own share;
4. operator CPU seconds per reconcile during the burst (CPU from /proc, reconciles from /metrics).

Targets from issue 5: p50 < 50 ms single job; burst < 10 s end to end. Nothing asserts on timing.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import kmock
import kopf
import yaml

from torchyard.operator.emulator import Emulator, kubeconfig
from torchyard.operator.kube import KubeApi, resource_path
from torchyard.operator.render_k8s import render_k8s

from torchyard.operator.api import load_job  # isort: skip

TRAINJOBS = resource_path("torchyard.dev/v1alpha1", "trainjobs", "default")
PODS = resource_path("v1", "pods", "default")
JOB = {
    "apiVersion": "torchyard.dev/v1alpha1",
    "kind": "TrainJob",
    "metadata": {"name": "x", "namespace": "default"},
    "spec": {"image": "torchyard/trainer:0.1.0", "config": "configs/digits_mlp.py", "nodes": 2},
}


def job(name: str, nodes: int) -> dict:
    data = copy.deepcopy(JOB)
    data["metadata"]["name"], data["spec"]["nodes"] = name, nodes
    return data


class PodClock:
    """Watches pods; `seen[job]` lists arrival times of the job's pods."""

    def __init__(self, api: KubeApi) -> None:
        self.api, self.seen, self.events = api, {}, {}

    async def run(self) -> None:
        async for event in self.api.watch(PODS):
            if event["type"] == "ADDED":
                name = event["object"]["metadata"]["labels"]["torchyard.dev/job-name"]
                self.seen.setdefault(name, []).append(time.perf_counter())
                if name in self.events:
                    self.events[name].set()

    async def wait(self, name: str, count: int) -> float:
        event = self.events.setdefault(name, asyncio.Event())
        while len(self.seen.get(name, [])) < count:
            event.clear()
            await event.wait()
        return self.seen[name][count - 1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def reconciles(port: int) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as r:
        text = await r.text()
    return sum(
        float(v) for v in re.findall(r"torchyard_reconcile_duration_seconds_count\{[^}]*\} (\S+)", text)
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def with_operator(args: argparse.Namespace) -> dict:
    async with Emulator() as emulator, kmock.Server(emulator) as server:
        url = str(server.url).rstrip("/")
        api = KubeApi(kopf.ConnectionInfo(server=url))
        clock = PodClock(api)
        watch = asyncio.create_task(clock.run())
        tmp = Path(tempfile.mkdtemp())
        (tmp / "kubeconfig").write_text(yaml.safe_dump(kubeconfig(url)))
        metrics_port = free_port()
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "torchyard"),
                "operator",
                "run",
                "--metrics-port",
                str(metrics_port),
            ],
            env={**os.environ, "KUBECONFIG": str(tmp / "kubeconfig")},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(200):
                try:
                    await reconciles(metrics_port)
                    break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            await asyncio.sleep(1)
            single = []
            for i in range(args.single):
                name = f"single-{i}"
                started = time.perf_counter()
                await api.create(TRAINJOBS, job(name, args.nodes))
                single.append(await clock.wait(name, args.nodes) - started)
            await asyncio.sleep(1)
            cpu0, rec0 = cpu_seconds(proc.pid), await reconciles(metrics_port)
            started = time.perf_counter()
            await asyncio.gather(
                *(api.create(TRAINJOBS, job(f"burst-{i}", args.nodes)) for i in range(args.burst))
            )
            await asyncio.gather(*(clock.wait(f"burst-{i}", args.nodes) for i in range(args.burst)))
            burst = time.perf_counter() - started
            await asyncio.sleep(2)  # let the status writes that follow the creates finish
            cpu, count = cpu_seconds(proc.pid) - cpu0, await reconciles(metrics_port) - rec0
        finally:
            proc.terminate()
            proc.wait(30)
            watch.cancel()
            await api.close()
        return {"single": single, "burst": burst, "cpu": cpu, "reconciles": count}


async def baseline(args: argparse.Namespace) -> dict:
    """The same objects created by plain API calls, no operator: the emulator's own cost."""
    async with Emulator() as emulator, kmock.Server(emulator) as server:
        api = KubeApi(kopf.ConnectionInfo(server=str(server.url).rstrip("/")))

        async def one(name: str) -> None:
            body = job(name, args.nodes)
            await api.create(TRAINJOBS, body)
            service, *pods = render_k8s(load_job(body))
            await asyncio.gather(
                api.create(resource_path("v1", "services", "default"), service),
                *(api.create(PODS, pod) for pod in pods),
            )

        single = []
        for i in range(args.single):
            started = time.perf_counter()
            await one(f"single-{i}")
            single.append(time.perf_counter() - started)
        started = time.perf_counter()
        await asyncio.gather(*(one(f"burst-{i}") for i in range(args.burst)))
        burst = time.perf_counter() - started
        await api.close()
        return {"single": single, "burst": burst}


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=30, help="single-job repetitions")
    parser.add_argument("--burst", type=int, default=200, help="jobs in the burst")
    parser.add_argument("--nodes", type=int, default=2, help="pods per job")
    args = parser.parse_args()
    base = asyncio.run(baseline(args))
    op = asyncio.run(with_operator(args))
    rows = [
        ("single job p50 (ms)", pct(op["single"], 50) * 1e3, pct(base["single"], 50) * 1e3, "< 50"),
        ("single job p95 (ms)", pct(op["single"], 95) * 1e3, pct(base["single"], 95) * 1e3, ""),
        (f"burst {args.burst} x {args.nodes} (s)", op["burst"], base["burst"], "< 10"),
    ]
    print(f"{'create -> all pods exist':28} {'operator':>10} {'emulator only':>14} {'ratio':>7}  target")
    for label, value, reference, target in rows:
        print(f"{label:28} {value:10.1f} {reference:14.1f} {value / reference:7.1f}  {target}")
    per = op["cpu"] / op["reconciles"] if op["reconciles"] else float("nan")
    print(
        f"operator CPU during the burst: {op['cpu']:.2f} s for {op['reconciles']:.0f} reconciles "
        f"= {per * 1e3:.2f} ms CPU per reconcile (kopf's watch/index work included)"
    )


if __name__ == "__main__":
    main()
