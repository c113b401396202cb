"""`torchyard dev-cluster`: a node agent that runs pods as local processes, against any API server.

It registers a Node (and keeps its Lease and Ready condition fresh, dev/node.py), watches the pods the
scheduler binds to it (field selector spec.nodeName, as a kubelet), starts each one's container command as
a local process group with the pod's env, and reports phase, exit code and termination message into the
pod's status, as a kubelet would:

- what a pod becomes here (names, ports, volumes, env) is dev/pod_process.py's, a pure function; the agent
  resolves claims to their volumes' folders and writes the ServiceAccount token volume for it;
- each pod gets its own TORCHYARD_TERMINATION_LOG file; with FallbackToLogsOnError and no message, the
  log's tail is the message; stdout/stderr go to `<state>/<namespace>/<pod>.log`, its pid to `.pid`;
- deleting a pod sends SIGTERM to its process group and SIGKILL after the grace period; the pod object
  is removed (grace 0) only once its processes are gone. When the main process exits, the rest of its
  group is killed, as when a container's PID 1 ends;
- an error it cannot mend (a status write refused, the watch refused) ends the agent with the message.

    make cluster && export KUBECONFIG=.cluster/admin.kubeconfig
    torchyard dev-cluster --volumes runs/            # as node "dev-cluster"
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp

from torchyard.contract.termination import PATH_VARIABLE
from torchyard.operator.control.kubeapi import KubeApi, resource_path
from torchyard.operator.dev.node import rfc3339 as now
from torchyard.operator.dev.pod_process import field_value, in_cluster_kubeconfig, local_pod
from torchyard.operator.errors import ApiError

NODE_NAME = "dev-cluster"
LOG_TAIL_BYTES = 2048
PREPARE_SECONDS = 60.0
CONTAINER_STATUS = {"image": "local-process", "imageID": "", "ready": False, "restartCount": 0}
logger = logging.getLogger("torchyard.dev-cluster")


class Runner:
    """Runs, as local processes, the pods that the scheduler binds to node `node` of an API server."""

    def __init__(
        self,
        api: KubeApi,
        volumes: Path,
        state: Path,
        node: str = NODE_NAME,
        workdir: Path | None = None,
    ) -> None:
        self.api, self.volumes, self.state, self.node = api, volumes, state, node
        self.workdir = workdir or Path.cwd()
        self.ports: dict[tuple, int] = {}
        self.procs: dict[tuple[str, str], asyncio.subprocess.Process | None] = {}
        self.stopping: set[tuple[str, str]] = set()
        self.tasks: set[asyncio.Task] = set()
        self.failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def run(self) -> None:
        """List and watch this node's pods (as a kubelet: by field selector) until cancelled. A broken
        connection or the server's own trouble (5xx, 429) is retried, a 410 (history compacted) relists;
        a refusal (401, 403, ...) ends the agent, with the server's message."""
        path = resource_path("v1", "pods")
        selector = f"spec.nodeName={self.node}"
        version = None
        while True:
            try:
                if version is None:
                    listing = await self.api.request("GET", path, fieldSelector=selector)
                    version = listing.get("metadata", {}).get("resourceVersion")
                    self._adopt_orphans(listing.get("items", []))
                async for event in self.api.watch(path, version, fieldSelector=selector):
                    kind, pod = event["type"], event["object"]
                    if kind == "ERROR":
                        if pod.get("code") == 410:
                            version = None  # history compacted: list again
                            break
                        raise ApiError(pod.get("code", 500), pod.get("reason", ""), pod.get("message", ""))
                    version = pod.get("metadata", {}).get("resourceVersion") or version
                    if kind != "BOOKMARK":
                        self.handle(kind, pod)
            except (aiohttp.ClientError, OSError, TimeoutError) as err:
                logger.warning(f"watching this node's pods broke, resuming: {err}")
                await asyncio.sleep(1)
            except ApiError as err:
                if err.status == 410:
                    version = None
                elif err.status >= 500 or err.status == 429:
                    logger.warning(f"the API server failed listing this node's pods, retrying: {err}")
                    await asyncio.sleep(1)
                else:
                    raise

    def _adopt_orphans(self, pods: list[dict[str, Any]]) -> None:
        """Pods bound here that claim to run but have no process (the agent restarted): as a kubelet that
        finds its containers gone, report them failed so that their job restarts them."""
        for pod in pods:
            meta = pod["metadata"]
            key = (meta.get("namespace", "default"), meta["name"])
            phase = (pod.get("status") or {}).get("phase")
            if phase == "Running" and key not in self.procs and not meta.get("deletionTimestamp"):
                self.procs[key] = None
                message = "the node agent restarted and the pod's processes are gone"
                started = pod["status"].get("startTime") or now()
                self._spawn(self._report(key, 137, started, message, "ContainerStatusUnknown"))
            else:
                self.handle("ADDED", pod)

    def handle(self, type_: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        key = (meta.get("namespace", "default"), meta["name"])
        if type_ == "DELETED" or meta.get("deletionTimestamp"):
            if key in self.procs and key not in self.stopping:
                self.stopping.add(key)
                grace = meta.get("deletionGracePeriodSeconds")
                grace = pod["spec"].get("terminationGracePeriodSeconds", 30) if grace is None else grace
                self._spawn(self._terminate(key, meta.get("uid"), grace, remove=type_ != "DELETED"))
            elif key not in self.procs and type_ != "DELETED":
                self._spawn(self._remove(key, meta.get("uid")))
            return
        phase = (pod.get("status") or {}).get("phase", "Pending")
        if phase == "Pending" and key not in self.procs:
            self.procs[key] = None  # claimed; the process starts next
            self._spawn(self._start(key, pod))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        if not self.failed.done():  # an error no retry can mend: the agent stops and says why
            self.failed.set_exception(task.exception())

    def _files(self, key: tuple[str, str], suffix: str) -> Path:
        return self.state / key[0] / f"{key[1]}{suffix}"

    async def _claims(self, pod: dict[str, Any]) -> dict[str, Path]:
        """The folders of the pod's claims whose volume is a folder of this host (hostPath or local), as a
        kubelet would mount them; other claims live under --volumes."""
        namespace = pod["metadata"].get("namespace", "default")
        folders = {}
        for volume in pod["spec"].get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if not claim:
                continue
            bound = await self.api.get(resource_path("v1", "persistentvolumeclaims", namespace, claim))
            volume_name = bound.get("spec", {}).get("volumeName")
            if not volume_name:
                continue
            source = (await self.api.get(resource_path("v1", "persistentvolumes", None, volume_name)))["spec"]
            path = (source.get("hostPath") or source.get("local") or {}).get("path")
            if path:
                folders[claim] = Path(path)
        return folders

    async def _project(self, key: tuple[str, str], pod: dict[str, Any]) -> Path | None:
        """Write the pod's ServiceAccount token volume (a bound token, ca.crt, namespace) as a kubelet does,
        and a kubeconfig beside it: a process cannot see the fixed in-cluster path, so KUBECONFIG names it."""
        namespace, name = key
        for volume in pod["spec"].get("volumes") or []:
            sources = (volume.get("projected") or {}).get("sources") or []
            wanted = next((s["serviceAccountToken"] for s in sources if "serviceAccountToken" in s), None)
            if wanted is None:
                continue
            account = pod["spec"].get("serviceAccountName") or "default"
            bound = {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": pod["metadata"]["uid"]}
            seconds = wanted.get("expirationSeconds", 3607)
            spec: dict[str, Any] = {"expirationSeconds": seconds, "boundObjectRef": bound}
            if wanted.get("audience"):
                spec["audiences"] = [wanted["audience"]]
            path = resource_path("v1", "serviceaccounts", namespace, account, "token")
            token = await self.api.create(path, {"apiVersion": "authentication.k8s.io/v1", "spec": spec})
            files = {wanted.get("path", "token"): token["status"]["token"]}
            for source in sources:
                if "configMap" in source:
                    config_map = resource_path("v1", "configmaps", namespace, source["configMap"]["name"])
                    data = (await self.api.get(config_map)).get("data") or {}
                    for item in source["configMap"].get("items") or [{"key": k, "path": k} for k in data]:
                        files[item["path"]] = data.get(item["key"], "")
                for item in (source.get("downwardAPI") or {}).get("items") or []:
                    files[item["path"]] = field_value(pod, item["fieldRef"]["fieldPath"])
            folder = self.state / namespace / name / volume["name"]
            folder.mkdir(parents=True, exist_ok=True)
            for file_name, text in files.items():
                (folder / file_name).write_text(text)
                (folder / file_name).chmod(0o600)
            kubeconfig = folder / "kubeconfig"
            kubeconfig.write_text(json.dumps(in_cluster_kubeconfig(self.api.server, folder)))
            return kubeconfig
        return None

    async def _prepare(self, key: tuple[str, str], pod: dict[str, Any]) -> tuple[dict, Path | None] | None:
        """The pod's claim folders and token kubeconfig. The Node authorizer lets a node read a pod's claim,
        ConfigMaps and token only once its graph shows the pod bound here, which lags the binding a little,
        so a refusal is retried for a while, as a kubelet does; then the pod fails, saying why (the agent
        and its other pods go on)."""
        deadline = asyncio.get_running_loop().time() + PREPARE_SECONDS
        delay = 0.2
        while True:
            try:
                return await self._claims(pod), await self._project(key, pod)
            except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as err:
                if asyncio.get_running_loop().time() > deadline:
                    message = f"cannot prepare the pod's volumes: {err}"
                    logger.error(f"pod {key[0]}/{key[1]}: {message}")
                    await self._report(key, 128, now(), message, "CreateContainerConfigError")
                    return None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5)

    async def _start(self, key: tuple[str, str], pod: dict[str, Any]) -> None:
        namespace, name = key
        prepared = await self._prepare(key, pod)
        if prepared is None:
            return
        claims, kubeconfig = prepared
        local = local_pod(pod, self.volumes, self.state, self.ports, claims)
        for directory in local.directories:
            directory.mkdir(parents=True, exist_ok=True)
        termination = self._files(key, ".termination-log")
        termination.parent.mkdir(parents=True, exist_ok=True)
        termination.write_text("")
        bin_dir = str(Path(sys.executable).parent)
        inherited = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}  # never the node's credentials
        env = {
            **inherited,
            **({"KUBECONFIG": str(kubeconfig)} if kubeconfig else {}),
            **local.env,
            PATH_VARIABLE: str(termination),
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOSTNAME": name,
        }
        log = self._files(key, ".log").open("ab")
        started = now()
        try:
            proc = await asyncio.create_subprocess_exec(
                *local.argv, env=env, cwd=self.workdir, stdout=log, stderr=log, start_new_session=True
            )
        except OSError as err:
            log.write(f"dev-cluster: cannot start {local.argv[:1]}: {err}\n".encode())
            log.close()
            await self._report(key, 127, started, str(err), "StartError")
            return
        log.close()
        self.procs[key] = proc
        self._files(key, ".pid").write_text(str(proc.pid))
        logger.info(f"started pod {namespace}/{name} as pid {proc.pid}; log: {self._files(key, '.log')}")
        container = pod["spec"]["containers"][0]["name"]
        running = {"running": {"startedAt": started}}
        await self._status(
            key,
            {
                "phase": "Running",
                "startTime": started,
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": started}],
                "containerStatuses": [
                    {**CONTAINER_STATUS, "name": container, "ready": True, "started": True, "state": running}
                ],
            },
        )
        code = await proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the container ends with its main process
        code = 128 - code if code < 0 else code
        logger.info(f"pod {namespace}/{name} exited with code {code}")
        if key not in self.stopping:
            policy = pod["spec"]["containers"][0].get("terminationMessagePolicy", "File")
            await self._report(key, code, started, container=container, log_fallback=policy != "File")

    async def _report(
        self,
        key: tuple[str, str],
        code: int,
        started: str,
        error: str = "",
        reason: str = "",
        container: str = "trainer",
        log_fallback: bool = False,
    ) -> None:
        message = error or self._files(key, ".termination-log").read_text()
        if log_fallback and not message.strip() and code != 0:
            log = self._files(key, ".log")
            message = log.read_bytes()[-LOG_TAIL_BYTES:].decode(errors="replace") if log.exists() else ""
        terminated = {
            "exitCode": code,
            "reason": reason or ("Completed" if code == 0 else "Error"),
            "startedAt": started,
            "finishedAt": now(),
            "message": message[-4096:],
        }
        await self._status(
            key,
            {
                "phase": "Succeeded" if code == 0 else "Failed",
                "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now()}],
                "containerStatuses": [
                    {**CONTAINER_STATUS, "name": container, "state": {"terminated": terminated}}
                ],
            },
        )

    async def _status(self, key: tuple[str, str], status: dict[str, Any]) -> None:
        """Write a pod's status; a pod deleted meanwhile needs none, any other refusal is an error."""
        path = resource_path("v1", "pods", key[0], key[1], "status")
        for delay in (0.5, 1, 2, 4, None):
            try:
                await self.api.patch(path, {"status": status})
                return
            except ApiError as err:
                if err.status == 404:
                    return
                if delay is None or (err.status < 500 and err.status != 429):
                    raise
            except (aiohttp.ClientError, OSError, TimeoutError):
                if delay is None:
                    raise
            await asyncio.sleep(delay)

    async def _terminate(self, key: tuple[str, str], uid: str | None, grace: float, remove: bool) -> None:
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
            await self._remove(key, uid)

    async def _remove(self, key: tuple[str, str], uid: str | None) -> None:
        """The kubelet's last word on a deleted pod: its processes are gone, the object may go (grace 0)."""
        self.procs.pop(key, None)
        await self.api.delete(resource_path("v1", "pods", key[0], key[1]), grace_seconds=0, uid=uid)

    async def stop(self) -> None:
        """Kill every process (the agent is going away)."""
        for proc in self.procs.values():
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for task in list(self.tasks):
            task.cancel()
