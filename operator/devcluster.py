"""`torchyard dev-cluster`: a kubelet stand-in that runs pods as local processes, to try the operator here.

It watches Pods through the API (the emulator, or in principle a real API server), binds each new pod to
itself (spec.nodeName) and starts its container command as a local process group with the pod's env, then
reports phase, exit code and termination message into the pod's status, as a kubelet would:

- the headless-Service DNS names `<host>.<subdomain>[.<ns>[.svc...]]` resolve to 127.0.0.1 (rewritten in
  args and env), and each job's rendezvous port maps to a free local port, so jobs never collide;
- volumes: a PersistentVolumeClaim is the folder `<volumes>/<claimName>` (plus subPath), an emptyDir a
  fresh folder; their mountPaths are substituted in args and env (/dev/shm stays as is);
- each pod gets its own TORCHYARD_TERMINATION_LOG file; with FallbackToLogsOnError and no message, the
  log's tail is the message; stdout/stderr go to `<state>/<namespace>/<pod>.log`, its pid to `.pid`;
- deleting a pod sends SIGTERM to its process group and SIGKILL after the grace period; the pod object
  is removed (grace 0) only once its processes are gone. When the main process exits, the rest of its
  group is killed, as when a container's PID 1 ends.

    torchyard dev-cluster --emulator --port 8001 --kubeconfig dev.kubeconfig --volumes runs/
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchyard.operator.emulator import now_rfc3339
from torchyard.operator.kube import ApiError, KubeApi, resource_path

NODE_NAME = "dev-cluster"
LOCALHOST = "127.0.0.1"
LOG_TAIL_BYTES = 2048
logger = logging.getLogger("torchyard.dev-cluster")


@dataclass
class LocalPod:
    """What one pod runs here (pure to compute: see `local_pod`)."""

    argv: list[str]
    env: dict[str, str]
    directories: list[Path] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in commands and env; $$ is a literal $."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
        value,
    )


def local_pod(pod: dict[str, Any], volumes: Path, state: Path, ports: dict[tuple, int]) -> LocalPod:
    """The argv, env and folders of `pod` here; `ports` maps (namespace, subdomain, port) -> a local port."""
    meta, spec = pod["metadata"], pod["spec"]
    namespace, name = meta.get("namespace", "default"), meta["name"]
    container = spec["containers"][0]
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        env[item["name"]] = expand(str(item.get("value", "")), env)
    mounts: list[tuple[str, Path]] = []
    directories = []
    volume_sources = {v["name"]: v for v in spec.get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        volume = volume_sources.get(mount["name"], {})
        if mount["mountPath"] == "/dev/shm":
            continue
        if "persistentVolumeClaim" in volume:
            local = volumes / volume["persistentVolumeClaim"]["claimName"]
        else:
            local = state / namespace / name / mount["name"]
        local = local / mount["subPath"] if mount.get("subPath") else local
        directories.append(local)
        mounts.append((mount["mountPath"].rstrip("/"), local.resolve()))
    mounts.sort(key=lambda item: -len(item[0]))  # the longest mountPath wins
    subdomain = spec.get("subdomain")
    port_map = {}
    for port in container.get("ports") or []:
        key = (namespace, subdomain or name, port["containerPort"])
        port_map[str(port["containerPort"])] = str(ports.setdefault(key, free_port()))

    def rewrite(value: str, is_port_var: bool = False) -> str:
        if subdomain:
            value = re.sub(
                rf"\b[a-z0-9-]+\.{re.escape(subdomain)}(\.{re.escape(namespace)}(\.svc(\.[a-z.]+)?)?)?\b",
                LOCALHOST,
                value,
            )
        for path, local in mounts:
            value = re.sub(rf"(?<![\w/]){re.escape(path)}(?=/|$|\b)", str(local), value)
        if is_port_var and value in port_map:
            return port_map[value]
        for port, local_port in port_map.items():
            value = re.sub(rf"(--master[-_]port=){port}\b", rf"\g<1>{local_port}", value)
        return value

    command = [*(container.get("command") or []), *(container.get("args") or [])]
    argv = [rewrite(expand(arg, env)) for arg in command]
    env = {key: rewrite(value, key.endswith("MASTER_PORT")) for key, value in env.items()}
    return LocalPod(argv, env, directories)


class Runner:
    """Runs the pods of one API server here."""

    def __init__(
        self,
        api: KubeApi,
        volumes: Path,
        state: Path,
        namespace: str | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.api, self.volumes, self.state, self.namespace = api, volumes, state, namespace
        self.workdir = workdir or Path.cwd()
        self.ports: dict[tuple, int] = {}
        self.procs: dict[tuple[str, str], asyncio.subprocess.Process] = {}
        self.stopping: set[tuple[str, str]] = set()
        self.tasks: set[asyncio.Task] = set()

    async def run(self) -> None:
        path = resource_path("v1", "pods", self.namespace)
        while True:
            try:
                listing = await self.api.get(path)
                for pod in listing.get("items", []):
                    self.handle("ADDED", pod)
                async for event in self.api.watch(path, listing.get("metadata", {}).get("resourceVersion")):
                    self.handle(event["type"], event["object"])
            except (ApiError, OSError) as err:
                logger.warning(f"watching pods failed, retrying: {err}")
            await asyncio.sleep(1)

    def handle(self, type_: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        key = (meta.get("namespace", "default"), meta["name"])
        if type_ == "DELETED" or meta.get("deletionTimestamp"):
            if key in self.procs and key not in self.stopping:
                self.stopping.add(key)
                grace = meta.get("deletionGracePeriodSeconds")
                grace = pod["spec"].get("terminationGracePeriodSeconds", 30) if grace is None else grace
                self._spawn(self._terminate(key, grace, remove=type_ != "DELETED"))
            elif key not in self.procs and type_ != "DELETED" and pod["spec"].get("nodeName") == NODE_NAME:
                self._spawn(self._remove(key))
            return
        phase = (pod.get("status") or {}).get("phase", "Pending")
        if phase == "Pending" and not pod["spec"].get("nodeName") and key not in self.procs:
            self.procs[key] = None  # claimed; the process starts next
            self._spawn(self._start(key, pod))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _files(self, key: tuple[str, str], suffix: str) -> Path:
        return self.state / key[0] / f"{key[1]}{suffix}"

    async def _start(self, key: tuple[str, str], pod: dict[str, Any]) -> None:
        namespace, name = key
        pod_path = resource_path("v1", "pods", namespace, name)
        try:
            await self.api.patch(pod_path, {"spec": {"nodeName": NODE_NAME}})
        except ApiError:
            self.procs.pop(key, None)
            return
        local = local_pod(pod, self.volumes, self.state, self.ports)
        for directory in local.directories:
            directory.mkdir(parents=True, exist_ok=True)
        termination = self._files(key, ".termination-log")
        termination.parent.mkdir(parents=True, exist_ok=True)
        termination.write_text("")
        bin_dir = str(Path(sys.executable).parent)
        env = {
            **os.environ,
            **local.env,
            "TORCHYARD_TERMINATION_LOG": str(termination),
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOSTNAME": name,
        }
        log = self._files(key, ".log").open("ab")
        started = now_rfc3339()
        try:
            proc = await asyncio.create_subprocess_exec(
                *local.argv, env=env, cwd=self.workdir, stdout=log, stderr=log, start_new_session=True
            )
        except OSError as err:
            log.write(f"dev-cluster: cannot start {local.argv[:1]}: {err}\n".encode())
            log.close()
            await self._report(key, 127, started, str(err))
            self.procs.pop(key, None)
            return
        log.close()
        self.procs[key] = proc
        self._files(key, ".pid").write_text(str(proc.pid))
        logger.info(f"started pod {namespace}/{name} as pid {proc.pid}")
        await self._status(
            key,
            {
                "phase": "Running",
                "startTime": started,
                "podIP": LOCALHOST,
                "containerStatuses": [
                    {
                        "name": pod["spec"]["containers"][0]["name"],
                        "ready": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": started}},
                    }
                ],
            },
        )
        code = await proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the container ends with its main process
        code = 128 - code if code < 0 else code
        logger.info(f"pod {namespace}/{name} exited with code {code}")
        if key not in self.stopping:
            await self._report(key, code, started)

    async def _report(self, key: tuple[str, str], code: int, started: str, error: str = "") -> None:
        message = error or self._files(key, ".termination-log").read_text()
        if not message.strip() and code != 0:
            log = self._files(key, ".log")
            message = log.read_bytes()[-LOG_TAIL_BYTES:].decode(errors="replace") if log.exists() else ""
        terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": started,
            "finishedAt": now_rfc3339(),
            "message": message[-4096:],
        }
        await self._status(
            key,
            {
                "phase": "Succeeded" if code == 0 else "Failed",
                "containerStatuses": [
                    {"name": "main", "ready": False, "restartCount": 0, "state": {"terminated": terminated}}
                ],
            },
        )

    async def _status(self, key: tuple[str, str], status: dict[str, Any]) -> None:
        with contextlib.suppress(ApiError):
            await self.api.patch(resource_path("v1", "pods", key[0], key[1], "status"), {"status": status})

    async def _terminate(self, key: tuple[str, str], grace: float, remove: bool) -> None:
        proc = self.procs.get(key)
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        self.procs.pop(key, None)
        self.stopping.discard(key)
        if remove:
            await self._remove(key)

    async def _remove(self, key: tuple[str, str]) -> None:
        with contextlib.suppress(ApiError):
            await self.api.delete(resource_path("v1", "pods", key[0], key[1]), grace_seconds=0)

    async def stop(self) -> None:
        """Kill every process (the runner is going away)."""
        for proc in self.procs.values():
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for task in list(self.tasks):
            task.cancel()
