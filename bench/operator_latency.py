"""Operator latency on the real control plane: create -> all pods exist and -> all pods Running.

    .venv/bin/python bench/operator_latency.py --single 20 --burst 200     # defaults: --single 30 --burst 200

Starts (or finds) the control plane of scripts/cluster/up.sh in --cluster-dir (default .cluster): etcd,
kube-apiserver, kube-controller-manager and kube-scheduler v1.36, RBAC and hardened admission on. Each run
gets namespaces of its own and one Node that only their pods land on (the PodNodeSelector and
PodTolerationRestriction admission plugins add the selector and the toleration to every pod), kept Ready
with operator/dev/node.py; a scripted node here marks each pod the real scheduler binds to it Running. Others
may use the same control plane at the same time: their load lands on every method alike (but a test
session's cluster-wide operator, running meanwhile, also serves this run's TrainJobs: run the bench alone).

Methods, each creating 2-pod jobs in a namespace of its own, interleaved job by job:

- plain: the API server's own share: the same objects (the TrainJob, its Service, its pods) created by plain
  API calls from here, pods owned by the job as the operator makes them;
- torchyard: `torchyard operator run --namespace NS` as its own process (its CPU is read from /proc), logged
  in as the Helm chart's ServiceAccount with a TokenRequest token, so the chart's RBAC applies (plus, for
  the run, the Namespace list/watch that the chart grants only in its namespaced modes: see
  grant_namespace_watch);
- kubeflow: Kubeflow's training-operator v1.9.4 manager (PyTorchJob, 1 master + 1 worker) as its own
  process with the admin kubeconfig and its default flags (--kube-api-qps 20, --controller-threads 1, as
  its Deployment ships). Its validating webhook is not registered (the API server here cannot reach a
  Service), so it is spared the webhook call its Deployment adds to every create. The Go module proxy
  serves github.com/kubeflow/training-operator v1.9.0-v1.9.4 when asked by version (its version list,
  `go list -m -versions`, shows only v1.8.1); bench/build_training_operator.sh builds the manager from it
  once (~5 min) into ~/.cache/torchyard. `--no-kubeflow` skips it; a refused or failed build is reported
  in the table's text, not fatal.

Measured: single: --single jobs one after another per method, create -> all pods exist (a pod watch here
sees them ADDED) and -> all pods Running, p50/p95; burst: --burst jobs created at once per method, time
until all pods exist and all Running; operator CPU per reconcile during the burst (CPU from /proc,
reconciles from each operator's /metrics). Goals (issue): torchyard create -> pods within 1.5x of the plain
calls at p50; burst < 10 s. Nothing asserts on timing. The table is printed and written to
bench/results.md, replacing that file's ``## operator_latency`` section; ``--json FILE`` also writes the
numbers for bench/report.py. The namespaces, the node and its lease are deleted at the end; the kubeflow.org
CRDs stay (cluster-wide, possibly in use by a concurrent run; re-applying them is idempotent).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import json
import os
import re
import secrets
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import yaml

from torchyard.operator.api.spec import load_job
from torchyard.operator.control.kubeapi import KubeApi, list_watch, resource_path
from torchyard.operator.dev.local_cluster import LocalControlPlane
from torchyard.operator.dev.node import NodeHeartbeat, node_manifest, rfc3339
from torchyard.operator.errors import ApiError
from torchyard.operator.kube.render import render_k8s

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / ".tools" / "bin"
RESULTS = Path(__file__).with_name("results.md")
SECTION = "## operator_latency"
RELEASE, RELEASE_NAMESPACE = "torchyard", "torchyard-system"
NODE_KEY = "torchyard.dev/bench-run"
# one node takes every pod of the run (up to 3 x (single + burst) x 2); the scheduler refuses more than this
NODE_CAPACITY = {"cpu": "1000", "memory": "4Ti", "pods": "5000"}
TRAINJOBS = ("torchyard.dev/v1alpha1", "trainjobs")
PYTORCHJOBS = ("kubeflow.org/v1", "pytorchjobs")
# the training-operator's cert rotator waits for the webhook server's certificate in this fixed folder (in its
# Deployment a Secret volume): the bench copies the Secret the rotator fills there
KUBEFLOW_CERT_DIR = Path("/tmp/k8s-webhook-server/serving-certs")
KUBEFLOW_SECRET = "training-operator-webhook-cert"
WAIT_SINGLE, WAIT_BURST = 60.0, 600.0
KUBEFLOW_VERSION = os.environ.get("TRAINING_OPERATOR_VERSION", "v1.9.4")  # bench/build_training_operator.sh
TRAINJOB = {
    "apiVersion": "torchyard.dev/v1alpha1",
    "kind": "TrainJob",
    "metadata": {"name": "x"},
    "spec": {"image": "torchyard/trainer:0.1.0", "config": "configs/digits_mlp.py", "nodes": 2},
}


def trainjob(name: str, namespace: str) -> dict[str, Any]:
    data = copy.deepcopy(TRAINJOB)
    data["metadata"] |= {"name": name, "namespace": namespace}
    return data


def pytorchjob(name: str, namespace: str) -> dict[str, Any]:
    """The same shape for Kubeflow: 2 pods (1 master + 1 worker), same image and command."""

    def replica() -> dict[str, Any]:
        container = {
            "name": "pytorch",  # the name the training-operator looks for
            "image": TRAINJOB["spec"]["image"],
            "command": ["torchyard-train", TRAINJOB["spec"]["config"], "--launcher", "pytorch"],
        }
        return {
            "replicas": 1,
            "restartPolicy": "OnFailure",
            "template": {"spec": {"containers": [container]}},
        }

    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"pytorchReplicaSpecs": {"Master": replica(), "Worker": replica()}},
    }


# --- the control plane -------------------------------------------------------------------------------------


class Plane(LocalControlPlane):
    def kubectl(self, *args: str) -> subprocess.CompletedProcess:
        return super().kubectl(TOOLS / "kubectl", *args)


def start_plane(cluster_dir: Path) -> Plane:
    """scripts/cluster/up.sh is idempotent: on a running control plane it only checks it."""
    up = subprocess.run(
        [str(REPO / "scripts/cluster/up.sh"), str(cluster_dir)], capture_output=True, text=True, timeout=1800
    )
    if up.returncode != 0:
        raise SystemExit(f"scripts/cluster/up.sh {cluster_dir} failed:\n{up.stderr}\n{up.stdout}")
    found = LocalControlPlane.at(cluster_dir)
    return Plane(found.dir, found.server)


async def ensure_chart(plane: Plane, api: KubeApi) -> None:
    """The chart's ServiceAccount and RBAC; installed only when missing, since concurrent test sessions
    install the same release and two helm upgrades at once refuse each other."""
    with contextlib.suppress(ApiError):
        await api.get(resource_path("v1", "serviceaccounts", RELEASE_NAMESPACE, RELEASE))
        return
    helm = subprocess.run(
        [
            *(str(TOOLS / "helm"), "upgrade", "--install", RELEASE, str(REPO / "charts" / RELEASE)),
            *("--namespace", RELEASE_NAMESPACE, "--create-namespace", "--set", "replicaCount=0"),
            *("--set", "watch.mode=clusterWide"),  # each run serves namespaces of its own
        ],
        env={**os.environ, "KUBECONFIG": str(plane.dir / "admin.kubeconfig")},
        capture_output=True,
        text=True,
    )
    if helm.returncode != 0:
        raise SystemExit(f"helm install of charts/torchyard failed:\n{helm.stderr}")


async def grant_namespace_watch(api: KubeApi, name: str) -> None:
    """kopf serving a list of namespaces lists and watches Namespaces; the chart grants that only in its
    namespaced watch modes, and the release here is cluster-wide (other sessions share it). Without the
    grant `torchyard operator run --namespace NS` retries the list for ~55 s before it falls back, and keeps
    retrying the watch in the background; so the run grants exactly the chart's namespaced-mode rule to
    the chart's ServiceAccount, under a name of its own, deleted at the end."""
    rbac = "rbac.authorization.k8s.io/v1"
    rule = {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]}
    await api.create(
        resource_path(rbac, "clusterroles"),
        {"apiVersion": rbac, "kind": "ClusterRole", "metadata": {"name": name}, "rules": [rule]},
    )
    subject = {"kind": "ServiceAccount", "name": RELEASE, "namespace": RELEASE_NAMESPACE}
    binding = {
        "apiVersion": rbac,
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [subject],
    }
    await api.create(resource_path(rbac, "clusterrolebindings"), binding)


async def operator_kubeconfig(plane: Plane, api: KubeApi, path: Path) -> None:
    """A kubeconfig for the chart's ServiceAccount: a TokenRequest token, as its pod would get one."""
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 7200},
    }
    sa = resource_path("v1", "serviceaccounts", RELEASE_NAMESPACE, RELEASE, "token")
    token = (await api.create(sa, request))["status"]["token"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "bench",
                "cluster": {"server": plane.server, "certificate-authority": str(plane.dir / "pki/ca.crt")},
            }
        ],
        "users": [{"name": "torchyard", "user": {"token": token}}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "torchyard"}}],
        "current-context": "bench",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


async def watch_forever(
    api: KubeApi,
    path: str,
    handle: Callable[[dict], None],
    ready: asyncio.Event,
    **selectors,
) -> None:
    """kube.list_watch with the bench's event-dict handlers."""

    async def forward(type_: str, obj: dict) -> None:
        handle({"type": type_, "object": obj})

    await list_watch(api, path, forward, ready, **selectors)


class ScriptedNode:
    """The run's node: pods bound to it start Running at once; deleted ones go at once (grace 0), as a
    kubelet would after a quick stop. Status patches run as tasks so that a burst is not serialised here."""

    def __init__(self, api: KubeApi, name: str) -> None:
        self.api, self.name = api, name
        self.seen: set[str] = set()
        self.tasks: set[asyncio.Task] = set()

    def manifest(self) -> dict[str, Any]:
        taint = {"key": NODE_KEY, "value": self.name, "effect": "NoSchedule"}
        return node_manifest(self.name, {NODE_KEY: self.name}, [taint])

    def handle(self, event: dict) -> None:
        pod = event["object"]
        meta = pod["metadata"]
        pods = resource_path("v1", "pods", meta["namespace"])
        if event["type"] == "DELETED":
            return
        if meta.get("deletionTimestamp"):
            self._spawn(self.api.delete(f"{pods}/{meta['name']}", grace_seconds=0, uid=meta["uid"]))
        elif meta["uid"] not in self.seen and (pod.get("status") or {}).get("phase") in (None, "Pending"):
            self.seen.add(meta["uid"])
            status = {"status": {"phase": "Running", "startTime": rfc3339()}}
            self._spawn(self.api.patch(f"{pods}/{meta['name']}/status", status))

    def _spawn(self, call: Awaitable) -> None:
        async def quietly() -> None:
            with contextlib.suppress(ApiError):
                await call

        task = asyncio.create_task(quietly())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self, ready: asyncio.Event) -> None:
        selector = {"fieldSelector": f"spec.nodeName={self.name}"}
        await watch_forever(self.api, resource_path("v1", "pods"), self.handle, ready, **selector)


class PodClock:
    """Watches a namespace's pods; notes when each pod of a job (its controlling owner) first appears and
    first reports Running."""

    def __init__(self, api: KubeApi, namespace: str) -> None:
        self.api, self.namespace = api, namespace
        self.created: dict[str, dict[str, float]] = {}  # job -> pod uid -> time
        self.running: dict[str, dict[str, float]] = {}
        self.changed: dict[str, asyncio.Event] = {}

    def handle(self, event: dict) -> None:
        now = time.perf_counter()
        pod = event["object"]
        owners = [o for o in pod["metadata"].get("ownerReferences") or [] if o.get("controller")]
        if not owners or event["type"] == "DELETED":
            return
        job, uid = owners[0]["name"], pod["metadata"]["uid"]
        self.created.setdefault(job, {}).setdefault(uid, now)
        if (pod.get("status") or {}).get("phase") == "Running":
            self.running.setdefault(job, {}).setdefault(uid, now)
        if job in self.changed:
            self.changed[job].set()

    async def wait(self, job: str, count: int, running: bool = False) -> float:
        """When the job's `count`-th pod appeared (or reported Running)."""
        times = self.running if running else self.created
        changed = self.changed.setdefault(job, asyncio.Event())
        while len(times.get(job, {})) < count:
            changed.clear()
            await changed.wait()
        return sorted(times[job].values())[count - 1]

    async def run(self, ready: asyncio.Event) -> None:
        await watch_forever(self.api, resource_path("v1", "pods", self.namespace), self.handle, ready)


# --- the methods -------------------------------------------------------------------------------------------


@dataclass
class Method:
    name: str
    label: str
    namespace: str
    create: Callable[[str], Awaitable[None]]
    clock: PodClock | None = None
    proc: subprocess.Popen | None = None
    reconciles: Callable[[], Awaitable[float]] | None = None
    single: list[tuple[float, float]] = field(default_factory=list)  # (to all pods exist, to all Running)
    burst: tuple[float, float] | None = None
    burst_cpu: float | None = None
    burst_reconciles: float | None = None
    burst_cpus: dict[str, float] = field(default_factory=dict)  # process -> CPU s from create to all Running
    burst_writes: dict[str, float] = field(default_factory=dict)  # "resource[/sub] VERB" -> requests served
    note: str = ""


def plain_create(api: KubeApi, namespace: str) -> Callable[[str], Awaitable[None]]:
    """The API server's own share: the objects the operator makes, made by plain calls (job first: the
    Service and pods name it as owner, as the operator's do)."""

    async def create(name: str) -> None:
        # suspended, so that an operator serving every namespace (a test session's, on a shared control
        # plane) leaves these pods to us; for the API server a suspended job costs the same
        body = trainjob(name, namespace)
        body["spec"]["suspend"] = True
        job = await api.create(resource_path(*TRAINJOBS, namespace), body)
        body["spec"]["suspend"] = False
        service, *pods = render_k8s(load_job(body))
        kopf.adopt([service, *pods], owner=job)
        await asyncio.gather(
            api.create(resource_path("v1", "services", namespace), service),
            *(api.create(resource_path("v1", "pods", namespace), pod) for pod in pods),
        )

    return create


def job_create(api: KubeApi, namespace: str, kind: tuple[str, str], render: Callable) -> Callable:
    async def create(name: str) -> None:
        await api.create(resource_path(*kind, namespace), render(name, namespace))

    return create


def metric_sum(pattern: str) -> Callable[[int], Awaitable[float]]:
    async def read(port: int) -> float:
        url = f"http://127.0.0.1:{port}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            text = await response.text()
        return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))

    return read


torchyard_reconciles = metric_sum(r"^torchyard_reconcile_duration_seconds_count\{[^}]*\} (\S+)")
kubeflow_reconciles = metric_sum(r'^controller_runtime_reconcile_total\{controller="pytorchjob[^}]*\} (\S+)')


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"exited with {proc.returncode}; its log ends:\n{tail(log)}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout:.0f} s; its log ends:\n{tail(log)}")


def tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


async def start_torchyard(plane: Plane, api: KubeApi, method: Method, tmp: Path) -> None:
    await operator_kubeconfig(plane, api, tmp / "torchyard.kubeconfig")
    port, log = free_port(), tmp / "torchyard.log"
    method.proc = subprocess.Popen(
        [
            *(str(Path(sys.executable).parent / "torchyard"), "operator", "run"),
            *("--namespace", method.namespace, "--metrics-port", str(port)),
        ],
        env={**os.environ, "KUBECONFIG": str(tmp / "torchyard.kubeconfig")},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    await wait_http(f"http://127.0.0.1:{port}/metrics", method.proc, log)
    method.reconciles = lambda: torchyard_reconciles(port)


def build_kubeflow() -> Path:
    """bench/build_training_operator.sh (once, cached); RuntimeError says why when it cannot."""
    done = subprocess.run(
        [str(REPO / "bench" / "build_training_operator.sh")],
        env={**os.environ, "TRAINING_OPERATOR_VERSION": KUBEFLOW_VERSION},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()][-6:]
        raise RuntimeError(f"bench/build_training_operator.sh exited {done.returncode}: " + " / ".join(lines))
    return Path(done.stdout.strip().splitlines()[-1])


async def start_kubeflow(plane: Plane, api: KubeApi, method: Method, tmp: Path, built: Path) -> None:
    applied = plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(built / "crds"))
    if applied.returncode != 0:
        raise RuntimeError(f"applying its CRDs failed: {applied.stderr.strip()}")
    waited = plane.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/pytorchjobs.kubeflow.org"
    )
    if waited.returncode != 0:
        raise RuntimeError(f"its PyTorchJob CRD is not established: {waited.stderr.strip()}")
    # the cert rotator fills this Secret (its Deployment ships it empty) and waits for the files
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": KUBEFLOW_SECRET}}
    await api.create(resource_path("v1", "secrets", method.namespace), secret)
    metrics, probes, log = free_port(), free_port(), tmp / "kubeflow.log"
    method.proc = subprocess.Popen(
        [
            *(str(built / "bin" / "training-operator.v1"), "--namespace", method.namespace),
            *(
                f"--metrics-bind-address=127.0.0.1:{metrics}",
                f"--health-probe-bind-address=127.0.0.1:{probes}",
            ),
            *(f"--webhook-server-port={free_port()}", "--zap-log-level=info"),
        ],
        env={
            **os.environ,
            "KUBECONFIG": str(plane.dir / "admin.kubeconfig"),
            "MY_POD_NAMESPACE": method.namespace,
            "MY_POD_NAME": "training-operator-bench",
        },
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        stored = await api.get(resource_path("v1", "secrets", method.namespace, KUBEFLOW_SECRET))
        data = stored.get("data") or {}
        if "tls.crt" in data and "tls.key" in data:
            break
        if method.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"its cert rotator did not fill Secret {KUBEFLOW_SECRET}; log:\n{tail(log)}")
        await asyncio.sleep(0.2)
    KUBEFLOW_CERT_DIR.mkdir(parents=True, exist_ok=True)
    for key in ("tls.crt", "tls.key"):
        (KUBEFLOW_CERT_DIR / key).write_bytes(base64.b64decode(data[key]))
    await wait_http(f"http://127.0.0.1:{probes}/readyz", method.proc, log)
    method.reconciles = lambda: kubeflow_reconciles(metrics)


# --- the run -----------------------------------------------------------------------------------------------


async def make_namespace(api: KubeApi, name: str, node: str) -> None:
    toleration = {"key": NODE_KEY, "operator": "Equal", "value": node, "effect": "NoSchedule"}
    annotations = {
        "scheduler.alpha.kubernetes.io/node-selector": f"{NODE_KEY}={node}",
        "scheduler.alpha.kubernetes.io/defaultTolerations": json.dumps([toleration]),
    }
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "annotations": annotations},
    }
    await api.create(resource_path("v1", "namespaces"), namespace)
    await until_default_account(api, name)


async def until_default_account(api: KubeApi, namespace: str) -> None:
    """Pods are refused until kube-controller-manager made the namespace's default ServiceAccount."""
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(ApiError):
            await api.get(resource_path("v1", "serviceaccounts", namespace, "default"))
            return
        if time.monotonic() > deadline:
            raise SystemExit(
                f"namespace {namespace} got no default ServiceAccount in 60 s: is kube-controller-manager up?"
            )
        await asyncio.sleep(0.2)


async def measure_one(method: Method, name: str, pods: int) -> tuple[float, float]:
    started = time.perf_counter()
    await method.create(name)
    exist = await asyncio.wait_for(method.clock.wait(name, pods), WAIT_SINGLE)
    running = await asyncio.wait_for(method.clock.wait(name, pods, running=True), WAIT_SINGLE)
    return exist - started, running - started


def plane_pids(plane: Plane) -> dict[str, int]:
    """The control plane's processes (scripts/cluster/up.sh writes their pids), to read their CPU."""
    pids = {}
    for name in ("kube-apiserver", "etcd", "kube-scheduler", "kube-controller-manager"):
        with contextlib.suppress(OSError, ValueError):
            pids[name] = int((plane.dir / "run" / f"{name}.pid").read_text())
    return pids


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    snapshot = {"bench": time.process_time()}  # this process: the clients, watches and scripted node
    for name, pid in pids.items():
        with contextlib.suppress(OSError):
            snapshot[name] = cpu_seconds(pid)
    return snapshot


WRITE_VERBS = ("POST", "PUT", "PATCH", "APPLY", "DELETE")
REQUESTS = re.compile(r"^apiserver_request_total\{([^}]*)\} (\S+)", re.MULTILINE)


async def api_writes(plane: Plane) -> dict[str, float]:
    """The API server's own count of the writes it served (all clients), by resource and verb."""
    pki = plane.dir / "pki"
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
        session.get(f"{plane.server}/metrics") as response,
    ):
        text = await response.text()
    writes: dict[str, float] = {}
    for labels, value in REQUESTS.findall(text):
        label = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if label.get("verb") in WRITE_VERBS:
            key = (
                "/".join(filter(None, (label.get("resource"), label.get("subresource"))))
                + " "
                + label["verb"]
            )
            writes[key] = writes.get(key, 0.0) + float(value)
    return writes


async def measure_burst(method: Method, jobs: int, pods: int, plane: Plane) -> None:
    """Where the CPU went is recorded too: on a small machine a burst is bound by the CPU of all the
    processes together, not by any one of them."""
    names = [f"burst-{i}" for i in range(jobs)]
    pids = plane_pids(plane) | ({"operator": method.proc.pid} if method.proc else {})
    writes = await api_writes(plane)
    cpu0 = cpu_seconds(method.proc.pid) if method.proc else 0.0
    rec0 = await method.reconciles() if method.reconciles else 0.0
    before = cpu_snapshot(pids)
    started = time.perf_counter()
    await asyncio.gather(*(method.create(name) for name in names))

    async def last(running: bool) -> float:
        return max(await asyncio.gather(*(method.clock.wait(name, pods, running) for name in names)))

    try:
        exist = await asyncio.wait_for(last(False), WAIT_BURST)
        running = await asyncio.wait_for(last(True), WAIT_BURST)
    except TimeoutError:
        done = sum(len(method.clock.running.get(name, {})) for name in names)
        method.note += f" burst: {done} of {jobs * pods} pods Running after {WAIT_BURST:.0f} s."
        return
    method.burst = (exist - started, running - started)
    after = cpu_snapshot(pids)
    method.burst_cpus = {name: after[name] - before[name] for name in after if name in before}
    written = await api_writes(plane)
    method.burst_writes = {
        key: n - writes.get(key, 0.0) for key, n in written.items() if n > writes.get(key, 0.0)
    }
    if method.proc:
        await asyncio.sleep(2)  # the status writes that follow the last pods belong to the burst too
        method.burst_cpu = cpu_seconds(method.proc.pid) - cpu0
        method.burst_reconciles = await method.reconciles() - rec0


async def cleanup(api: KubeApi, node: ScriptedNode, methods: list[Method]) -> None:
    """Operators first (so none reacts to the deletions), then the namespaces, dropping the jobs' kopf
    finalizers until they are gone (an operator of others serving all namespaces may add them again, and
    stop before it removes them), while the node still finishes their pods; then the node and its lease."""
    for method in methods:
        if method.proc and method.proc.poll() is None:
            method.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                method.proc.wait(30)
            if method.proc.poll() is None:
                method.proc.kill()
    namespaces = {method.namespace for method in methods}
    for namespace in namespaces:
        with contextlib.suppress(ApiError):
            await api.delete(resource_path("v1", "namespaces", None, namespace))
    deadline = time.monotonic() + 180
    while namespaces and time.monotonic() < deadline:
        for namespace in list(namespaces):
            try:
                await api.get(resource_path("v1", "namespaces", None, namespace))
            except ApiError as err:
                if err.status == 404:
                    namespaces.discard(namespace)
                continue
            for kind in (TRAINJOBS, PYTORCHJOBS):
                with contextlib.suppress(ApiError, ValueError):  # ValueError: a plain-text 404, no such CRD
                    for job in (await api.get(resource_path(*kind, namespace)))["items"]:
                        if job["metadata"].get("finalizers"):
                            path = resource_path(*kind, namespace, job["metadata"]["name"])
                            await api.patch(path, {"metadata": {"finalizers": None}})
        await asyncio.sleep(1)
    if namespaces:
        say(f"namespaces {', '.join(sorted(namespaces))} are still terminating; the node goes anyway")
    with contextlib.suppress(ApiError):
        await api.delete(resource_path("v1", "nodes", None, node.name))
    with contextlib.suppress(ApiError):
        await api.delete(resource_path("coordination.k8s.io/v1", "leases", "kube-node-lease", node.name))
    for plural in ("clusterrolebindings", "clusterroles"):
        with contextlib.suppress(ApiError):
            await api.delete(resource_path("rbac.authorization.k8s.io/v1", plural, None, node.name))
    for key in ("tls.crt", "tls.key"):
        (KUBEFLOW_CERT_DIR / key).unlink(missing_ok=True)


async def run(args: argparse.Namespace) -> tuple[list[Method], str]:
    plane = await asyncio.to_thread(start_plane, args.cluster_dir)
    api = KubeApi(plane.admin())
    await ensure_chart(plane, api)
    run_id = f"bench-{secrets.token_hex(3)}"
    node = ScriptedNode(api, run_id)
    tmp = Path(tempfile.mkdtemp(prefix="operator-latency-"))
    plain, ours, theirs = f"{run_id}-plain", f"{run_id}-ty", f"{run_id}-kf"
    methods = [
        Method("plain", "plain API calls", plain, plain_create(api, plain)),
        Method("torchyard", "torchyard", ours, job_create(api, ours, TRAINJOBS, trainjob)),
    ]
    kubeflow = Method(
        "kubeflow", f"Kubeflow {KUBEFLOW_VERSION}", theirs, job_create(api, theirs, PYTORCHJOBS, pytorchjob)
    )
    everything = [*methods, kubeflow] if args.kubeflow else list(methods)
    why = "" if args.kubeflow else f"skipped ({'--no-kubeflow' if args.nodes == 2 else '--nodes is not 2'})"
    tasks: list[asyncio.Task] = []

    async def follow(watcher: ScriptedNode | PodClock) -> None:
        ready = asyncio.Event()
        tasks.append(asyncio.create_task(watcher.run(ready)))
        await ready.wait()

    try:
        async with NodeHeartbeat(api, node.manifest(), NODE_CAPACITY):
            await follow(node)
            try:
                for method in everything:
                    await make_namespace(api, method.namespace, node.name)
                    method.clock = PodClock(api, method.namespace)
                    await follow(method.clock)
                await grant_namespace_watch(api, node.name)
                await start_torchyard(plane, api, methods[1], tmp)
                say(f"node {node.name} Ready; torchyard operator up (logs in {tmp})")
                if args.kubeflow:
                    try:
                        built = await asyncio.to_thread(build_kubeflow)
                        await start_kubeflow(plane, api, kubeflow, tmp, built)
                        methods.append(kubeflow)
                        say("Kubeflow training-operator up")
                    except (RuntimeError, ApiError, subprocess.TimeoutExpired) as err:
                        why = "not measured: " + " / ".join(str(err).splitlines())
                        say(f"Kubeflow training-operator {why}")
                shared = await sharing(api, everything)
                for method in methods:  # the first job pays for caches and connections: not measured
                    exist, running = await measure_one(method, "warm-up", args.nodes)
                    say(f"warm-up, {method.label}: pods exist after {exist:.2f} s, Running {running:.2f} s")
                for i in range(args.single):  # interleaved, the order rotating: drift lands on all alike
                    for method in methods[i % len(methods) :] + methods[: i % len(methods)]:
                        method.single.append(await measure_one(method, f"single-{i}", args.nodes))
                        await asyncio.sleep(0.2)  # let the status writes that follow the pods settle
                say(f"{args.single} single jobs per method measured")
                for method in methods:
                    await asyncio.sleep(2)
                    await measure_burst(method, args.burst, args.nodes, plane)
                    exist, running = method.burst or (float("nan"), float("nan"))
                    say(f"burst, {method.label}: pods exist after {exist:.2f} s, Running {running:.2f} s")
                shared |= await sharing(api, everything)
                if shared:
                    names = ", ".join(sorted(shared)[:4]) + (", ..." if len(shared) > 4 else "")
                    methods[1].note += (
                        f" others had TrainJobs on the control plane meanwhile (namespaces {names}): an "
                        "operator serving all namespaces (a test session's) would have served ours too."
                    )
            finally:  # inside the heartbeat: the node still finishes the pods the deletions end
                say("cleaning up")
                await cleanup(api, node, everything)
                (tmp / "torchyard.kubeconfig").unlink(missing_ok=True)  # a live token; the logs stay
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await api.close()
    return methods, why


async def sharing(api: KubeApi, methods: list[Method]) -> set[str]:
    """Namespaces of others with TrainJobs: a cluster-wide operator serving those serves ours as well."""
    items = (await api.get(resource_path(*TRAINJOBS)))["items"]
    return {item["metadata"]["namespace"] for item in items} - {method.namespace for method in methods}


def say(text: str) -> None:
    print(f"operator_latency: {time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


CPU_COLUMNS = ("kube-apiserver", "etcd", "kube-scheduler", "kube-controller-manager", "operator", "bench")


def cpu_row(method: Method) -> str:
    wall, cpus = method.burst[1], method.burst_cpus
    cells = [f"{cpus[name]:.1f}" if name in cpus else "-" for name in CPU_COLUMNS]
    total = sum(cpus.values())
    writes = sum(method.burst_writes.values())
    return (
        f"| {method.label} | {wall:.1f} | " + " | ".join(cells) + f" | {total:.1f} | {total / wall:.2f} | "
        f"{writes:.0f} |"
    )


def writes_line(method: Method) -> str:
    top = sorted(method.burst_writes.items(), key=lambda item: -item[1])
    return f"- {method.label}: " + ", ".join(f"{key} {n:.0f}" for key, n in top if n >= 5) + "."


def report(args: argparse.Namespace, methods: list[Method], why: str) -> tuple[str, dict]:
    bursts = [method for method in methods if method.burst and method.burst_cpus]
    by = {method.name: method for method in methods}
    plain, ours, theirs = by["plain"], by["torchyard"], by.get("kubeflow")

    def single(method: Method, which: int, q: int) -> float:
        return pct([pair[which] for pair in method.single], q) * 1e3

    def burst(method: Method, which: int) -> float | None:
        return method.burst[which] if method.burst else None

    rows = [
        ("one job: all pods exist, p50 (ms)", lambda m: single(m, 0, 50), "torchyard <= 1.5x plain"),
        ("one job: all pods exist, p95 (ms)", lambda m: single(m, 0, 95), ""),
        ("one job: all pods Running, p50 (ms)", lambda m: single(m, 1, 50), ""),
        ("one job: all pods Running, p95 (ms)", lambda m: single(m, 1, 95), ""),
        (f"burst of {args.burst}: all pods exist (s)", lambda m: burst(m, 0), "< 10 s"),
        (f"burst of {args.burst}: all pods Running (s)", lambda m: burst(m, 1), "< 10 s"),
    ]

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}" if value >= 10 else f"{value:.2f}"

    def ratio(a: float | None, b: float | None) -> str:
        return "-" if a is None or b is None else f"{a / b:.2f}x"

    head = "| create -> | plain API calls | torchyard | torchyard / plain |"
    rule = "|---|---:|---:|---:|"
    if theirs:
        head += " Kubeflow training-operator | Kubeflow / plain | torchyard / Kubeflow |"
        rule += "---:|---:|---:|"
    table = [head + " goal |", rule + "---|"]
    for label, value, goal in rows:
        p, o = value(plain), value(ours)
        line = f"| {label} | {num(p)} | {num(o)} | {ratio(o, p)} |"
        if theirs:
            k = value(theirs)
            line += f" {num(k)} | {ratio(k, p)} | {ratio(o, k)} |"
        table.append(line + f" {goal} |")

    def cpu(method: Method) -> str:
        if method.burst_cpu is None or not method.burst_reconciles:
            return f"{method.label}: not measured."
        per = method.burst_cpu / method.burst_reconciles
        return (
            f"{method.label}: {method.burst_cpu:.2f} s CPU for {method.burst_reconciles:.0f} reconciles = "
            f"{per * 1e3:.2f} ms per reconcile."
        )

    kubeflow_text = (
        f"Kubeflow: training-operator {KUBEFLOW_VERSION} (`cmd/training-operator.v1`, built from the Go "
        "module proxy by bench/build_training_operator.sh), admin kubeconfig, its default flags as its "
        "Deployment ships them (--kube-api-qps 20, --kube-api-burst 30, --controller-threads 1); a "
        "PyTorchJob of 1 master + 1 worker. Its validating webhook is not registered (this API server "
        "cannot reach a Service), which spares it the webhook call its Deployment adds to every create."
        if theirs
        else f"Kubeflow training-operator: {why}"
    )
    lines = [
        SECTION,
        "",
        "Real control plane (scripts/cluster/up.sh: etcd 3.6, kube-apiserver, kube-controller-manager and "
        "kube-scheduler v1.36.3 on 127.0.0.1, RBAC and hardened admission), shared with whatever else runs "
        f"on it ({os.cpu_count()} CPUs, shared too). One job: {args.single} jobs of {args.nodes} pods per "
        f"method, one after another, the methods interleaved; burst: {args.burst} jobs created at once. "
        "Times run from the create call until a pod watch here sees the job's last pod ADDED, or Running "
        "(a scripted node marks each pod the real scheduler binds to it Running). Plain API calls: the "
        "TrainJob, its Service and its pods created by the bench, no operator: the API server's own share. "
        "torchyard: `torchyard operator run --namespace NS`, logged in as the chart's ServiceAccount "
        "(TokenRequest token), granted for the run the Namespace list/watch the chart gives in its "
        "namespaced modes (kopf needs it to serve a namespace list). " + kubeflow_text,
        f"Command: `.venv/bin/python bench/operator_latency.py {' '.join(options(args))}`",
        "",
        *table,
        "",
        "Operator CPU during its burst (from /proc; reconciles from its /metrics: torchyard's "
        "`torchyard_reconcile_duration_seconds_count`, Kubeflow's `controller_runtime_reconcile_total` of "
        "its pytorchjob controller):",
        "",
        *(f"- {cpu(method)}" for method in (ours, theirs) if method),
        *(f"- {method.label}:{method.note}" for method in methods if method.note),
        "",
        f"CPU seconds from the burst's first create until its last pod Running ({os.cpu_count()} CPUs; "
        "others' work on the shared control plane included):",
        "",
        "| burst of | wall (s) | " + " | ".join(CPU_COLUMNS) + " | total | total / wall | API writes |",
        "|---|---:|" + "---:|" * (len(CPU_COLUMNS) + 3),
        *(cpu_row(method) for method in bursts),
        "",
        "API writes the API server served during each burst, by resource and verb (its "
        "`apiserver_request_total`; all clients: the bench, the operator, the scheduler's bindings, the "
        "scripted node's status patches, kube-controller-manager, others):",
        "",
        *(writes_line(method) for method in bursts),
    ]
    data = {
        "burst_cpu_seconds": {method.name: method.burst_cpus for method in methods},
        "burst_api_writes": {method.name: method.burst_writes for method in methods},
        "single_p50": single(ours, 0, 50) / 1e3,
        "single_p95": single(ours, 0, 95) / 1e3,
        "base_single_p50": single(plain, 0, 50) / 1e3,
        "base_single_p95": single(plain, 0, 95) / 1e3,
        "running_p50": single(ours, 1, 50) / 1e3,
        "base_running_p50": single(plain, 1, 50) / 1e3,
        "burst": burst(ours, 0),
        "base_burst": burst(plain, 0),
        "burst_running": burst(ours, 1),
        "base_burst_running": burst(plain, 1),
        "burst_jobs": args.burst,
        "nodes": args.nodes,
        "cpu": ours.burst_cpu,
        "reconciles": ours.burst_reconciles,
        "cpu_per_reconcile": (ours.burst_cpu or 0) / ours.burst_reconciles if ours.burst_reconciles else None,
        "single": [pair[0] for pair in ours.single],
        "base_single": [pair[0] for pair in plain.single],
        "kubeflow": None
        if theirs is None
        else {
            "single_p50": single(theirs, 0, 50) / 1e3,
            "single_p95": single(theirs, 0, 95) / 1e3,
            "running_p50": single(theirs, 1, 50) / 1e3,
            "burst": burst(theirs, 0),
            "burst_running": burst(theirs, 1),
            "cpu": theirs.burst_cpu,
            "reconciles": theirs.burst_reconciles,
        },
        "kubeflow_why": why,
    }
    return "\n".join(lines) + "\n", data


def options(args: argparse.Namespace) -> list[str]:
    """The options of this run, as one would type them again."""
    given = ["--single", str(args.single), "--burst", str(args.burst)]
    given += ["--nodes", str(args.nodes)] if args.nodes != 2 else []
    given += ["--no-kubeflow"] if not args.kubeflow and args.nodes == 2 else []
    given += ["--cluster-dir", str(args.cluster_dir)] if args.cluster_dir != REPO / ".cluster" else []
    return given


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=30, help="jobs one after another, per method")
    parser.add_argument("--burst", type=int, default=200, help="jobs in the burst, per method")
    parser.add_argument("--nodes", type=int, default=2, help="pods per TrainJob (Kubeflow: always 2)")
    parser.add_argument("--cluster-dir", type=Path, default=REPO / ".cluster", help="scripts/cluster/up.sh's")
    parser.add_argument("--no-kubeflow", dest="kubeflow", action="store_false", help="skip the Kubeflow run")
    parser.add_argument("--json", type=Path, help="also write the numbers here (for bench/report.py)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/results.md alone")
    args = parser.parse_args(argv)
    if args.nodes != 2:
        args.kubeflow = False  # its PyTorchJob here has the 2-pod shape only
    methods, why = asyncio.run(run(args))
    text, data = report(args, methods, why)
    print(text, end="")
    if args.json:
        args.json.write_text(json.dumps(data, indent=1))
    if not args.no_write:
        write_section(text)


def write_section(text: str, section: str = SECTION) -> None:
    """Replace a bench's section of results.md (its heading up to the next ``## ``); keep the rest."""
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(section)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    new = (
        pattern.sub(lambda _: text + "\n", old, count=1)
        if pattern.search(old)
        else old.rstrip() + "\n\n" + text
    )
    RESULTS.write_text(new.rstrip("\n") + "\n")


if __name__ == "__main__":
    main()
