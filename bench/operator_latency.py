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
The table is printed and written to bench/results.md, replacing that file's ``## operator_latency`` section;
``--json FILE`` also writes the numbers for bench/report.py.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
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
RESULTS = Path(__file__).with_name("results.md")
SECTION = "## operator_latency"
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=30, help="single-job repetitions")
    parser.add_argument("--burst", type=int, default=200, help="jobs in the burst")
    parser.add_argument("--nodes", type=int, default=2, help="pods per job")
    parser.add_argument("--json", type=Path, help="also write the numbers here (for bench/report.py)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/results.md alone")
    args = parser.parse_args(argv)
    base = asyncio.run(baseline(args))
    op = asyncio.run(with_operator(args))
    rows = [
        ("single job p50 (ms)", pct(op["single"], 50) * 1e3, pct(base["single"], 50) * 1e3, "< 50"),
        ("single job p95 (ms)", pct(op["single"], 95) * 1e3, pct(base["single"], 95) * 1e3, ""),
        (f"burst {args.burst} x {args.nodes} (s)", op["burst"], base["burst"], "< 10"),
    ]
    per = op["cpu"] / op["reconciles"] if op["reconciles"] else float("nan")
    lines = [
        SECTION,
        "",
        f"TrainJob create -> all its pods exist, against the in-process API emulator; the operator runs as "
        f"`torchyard operator run`. single: {args.single} jobs one after another; burst: {args.burst} jobs "
        f"created at once, {args.nodes} pods each. Emulator only: the same objects created by plain API "
        f"calls, no operator ({os.cpu_count()} CPUs, shared).",
        "",
        "| create -> all pods exist | operator | emulator only | ratio | target |",
        "|---|---:|---:|---:|---|",
        *(
            f"| {label} | {value:.1f} | {reference:.1f} | {value / reference:.1f}x | {target} |"
            for label, value, reference, target in rows
        ),
        "",
        f"Operator CPU during the burst: {op['cpu']:.2f} s for {op['reconciles']:.0f} reconciles = "
        f"{per * 1e3:.2f} ms CPU per reconcile (kopf's watch and index work included).",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "single_p50": pct(op["single"], 50),
                    "single_p95": pct(op["single"], 95),
                    "base_single_p50": pct(base["single"], 50),
                    "base_single_p95": pct(base["single"], 95),
                    "burst": op["burst"],
                    "base_burst": base["burst"],
                    "burst_jobs": args.burst,
                    "nodes": args.nodes,
                    "cpu": op["cpu"],
                    "reconciles": op["reconciles"],
                    "cpu_per_reconcile": per,
                    "single": op["single"],
                    "base_single": base["single"],
                },
                indent=1,
            )
        )
    if not args.no_write:
        write_section(text)


def write_section(text: str) -> None:
    """Replace this bench's section of results.md (its heading up to the next ``## ``); keep the rest."""
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    new = (
        pattern.sub(lambda _: text + "\n", old, count=1)
        if pattern.search(old)
        else old.rstrip() + "\n\n" + text
    )
    RESULTS.write_text(new.rstrip("\n") + "\n")


if __name__ == "__main__":
    main()
