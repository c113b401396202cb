"""The dev-cluster as a user runs it, for end-to-end tests (here and in tests/faults): a node agent and the
operator as processes on the real control plane, each test in a namespace of its own.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ..operator_harness import RELEASE, RELEASE_NAMESPACE, TEST_NODE_KEY, control_plane, isolated_namespace

REPO = Path(__file__).resolve().parents[3]
TORCHYARD = str(Path(sys.executable).parent / "torchyard")


class DevCluster:
    """What a user runs on the real control plane of `make cluster`, each in a namespace of its own: a
    `torchyard dev-cluster` node (pods as local processes) and `torchyard operator run` as the chart's
    ServiceAccount, as processes; jobs are created through the Kubernetes Python client as the admin."""

    def __init__(self, tmp: Path) -> None:
        import kubernetes

        self.plane = control_plane()
        self.tmp, self.ns = tmp, f"e2e-{secrets.token_hex(4)}"
        self.procs: list[subprocess.Popen] = []
        kubernetes.config.load_kube_config(str(self.plane.dir / "admin.kubeconfig"))
        self.core = kubernetes.client.CoreV1Api()
        self.api = kubernetes.client.CustomObjectsApi()
        self._namespace()
        self.kubeconfig = tmp / "operator.kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump(self._operator_kubeconfig()))
        self.logs = [open(tmp / "dev-cluster.log", "wb"), open(tmp / "operator.log", "wb")]  # noqa: SIM115
        admin = {**os.environ, "KUBECONFIG": str(self.plane.dir / "admin.kubeconfig")}
        self.procs.append(
            subprocess.Popen(
                [
                    TORCHYARD,
                    "dev-cluster",
                    "--node",
                    self.ns,
                    "--label",
                    f"{TEST_NODE_KEY}={self.ns}",
                    "--taint",
                    f"{TEST_NODE_KEY}={self.ns}:NoSchedule",
                    "--volumes",
                    str(tmp / "volumes"),
                    "--state",
                    str(tmp / "state"),
                    "--workdir",
                    str(REPO),
                ],
                stdout=self.logs[0],
                stderr=subprocess.STDOUT,
                env=admin,
            )
        )
        self._wait(lambda: b"is Ready" in (tmp / "dev-cluster.log").read_bytes(), 60, "the node")
        self.procs.append(
            subprocess.Popen(
                [TORCHYARD, "operator", "run"],
                env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
                stdout=self.logs[1],
                stderr=subprocess.STDOUT,
            )
        )

    def _namespace(self) -> None:
        """The namespace, its pods sent to this test's node only, and the claim `runs` bound to a volume
        that is the folder tmp/volumes/runs (the node mounts it, as a kubelet mounts a hostPath volume)."""
        metadata = {"name": self.ns, "annotations": isolated_namespace(self.ns)}
        self.core.create_namespace({"metadata": metadata})
        accounts = self.core.list_namespaced_service_account
        self._wait(lambda: accounts(self.ns).items, 30, "the namespace's default ServiceAccount")
        folder = self.tmp / "volumes" / "runs"
        folder.mkdir(parents=True)
        self.core.create_persistent_volume(
            {
                "metadata": {"name": self.ns},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "",
                    "hostPath": {"path": str(folder)},
                    "claimRef": {"namespace": self.ns, "name": "runs"},
                },
            }
        )
        self.core.create_namespaced_persistent_volume_claim(
            self.ns,
            {
                "metadata": {"name": "runs"},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "",
                    "volumeName": self.ns,
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )

    def _operator_kubeconfig(self) -> dict:
        token = self.core.create_namespaced_service_account_token(
            RELEASE, RELEASE_NAMESPACE, {"spec": {"expirationSeconds": 7200}}
        ).status.token
        cluster = {"server": self.plane.server, "certificate-authority": str(self.plane.dir / "pki/ca.crt")}
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": cluster}],
            "users": [{"name": "operator", "user": {"token": token}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "operator"}}],
            "current-context": "c",
        }

    def create(self, job: dict) -> None:
        self.api.create_namespaced_custom_object("torchyard.dev", "v1alpha1", self.ns, "trainjobs", job)

    def status(self, name: str) -> dict:
        job = self.api.get_namespaced_custom_object("torchyard.dev", "v1alpha1", self.ns, "trainjobs", name)
        return job.get("status") or {}

    def events(self, reasons: tuple[str, ...]) -> list[str]:
        return [e.message for e in self.core.list_namespaced_event(self.ns).items if e.reason in reasons]

    def pid(self, pod: str) -> int:
        return int((self.tmp / "state" / self.ns / f"{pod}.pid").read_text())

    def wait_phase(self, name: str, phases: set[str], timeout: float) -> dict:
        return self._wait(
            lambda: self.status(name) if self.status(name).get("phase") in phases else None,
            timeout,
            f"{name} in {phases}",
        )

    def _wait(self, check, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = check()
            if result:
                return result
            if any(proc.poll() is not None for proc in self.procs):
                break
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}; logs in {self.tmp}:\n{self.tail()}")

    def tail(self) -> str:
        return "\n".join((self.tmp / n).read_text()[-3000:] for n in ("dev-cluster.log", "operator.log"))

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in self.logs:
            log.close()
        for kind in ("trainjobs", "testjobs"):
            group = ("torchyard.dev", "v1alpha1", self.ns, kind)
            for job in self.api.list_namespaced_custom_object(*group)["items"]:
                self.api.delete_namespaced_custom_object(*group, job["metadata"]["name"])
                unblock = {"metadata": {"finalizers": None}}  # no operator runs any more
                self.api.patch_namespaced_custom_object(*group, job["metadata"]["name"], unblock)
        self.core.delete_namespace(self.ns)
        self.core.delete_persistent_volume(self.ns)
        self.core.delete_node(self.ns)


def example(**spec) -> dict:
    """examples/trainjob.yaml with spec fields replaced."""
    job = yaml.safe_load((REPO / "examples/trainjob.yaml").read_text())
    job["spec"].update(spec)
    return job
