"""The control plane of `make cluster` (scripts/cluster/up.sh, which starts and stops it) as its clients
see it: where it serves and how to log in, as its admin or with a ServiceAccount's token. The tests'
harness and the benchmarks use it; the operator itself never does (it logs in as kopf finds credentials).

    plane = LocalControlPlane.at(Path(".cluster"))
    api = KubeApi(plane.admin())
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import kopf


@dataclass
class LocalControlPlane:
    dir: Path  # the folder up.sh was given: pki/, run/, logs/, admin.kubeconfig
    server: str

    @classmethod
    def at(cls, folder: Path) -> LocalControlPlane:
        """The control plane started in `folder` (its API server's port is in run/apiserver.port)."""
        port = (folder / "run" / "apiserver.port").read_text().strip()
        return cls(folder.resolve(), f"https://127.0.0.1:{port}")

    def admin(self) -> kopf.ConnectionInfo:
        pki = self.dir / "pki"
        return kopf.ConnectionInfo(
            server=self.server,
            ca_path=str(pki / "ca.crt"),
            certificate_path=str(pki / "admin.crt"),
            private_key_path=str(pki / "admin.key"),
        )

    def as_token(self, token: str) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=self.server, ca_path=str(self.dir / "pki" / "ca.crt"), token=token)

    def kubectl(self, kubectl: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        """`kubectl args...` as the admin."""
        env = {**os.environ, "KUBECONFIG": str(self.dir / "admin.kubeconfig")}
        return subprocess.run([str(kubectl), *args], env=env, input=input, capture_output=True, text=True)
