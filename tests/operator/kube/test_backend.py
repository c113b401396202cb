"""Scenarios on the real control plane: the operator in-process as the chart's ServiceAccount, the real
scheduler binding pods to a scripted node whose containers the tests end."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path

import pytest

from torchyard.operator.control.kubeapi import job_path, resource_path

from ..jobs import TEST, make
from ..operator_harness import running_cluster, running_operator, termination, train_job

pytestmark = pytest.mark.asyncio
NODES = ["digits-mlp-node-0", "digits-mlp-node-1"]
REPO = Path(__file__).resolve().parents[3]


def cond(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


async def succeed_all(cluster, attempt: int = 0, **details) -> None:
    await cluster.running_pods(NODES, attempt)
    await cluster.kubelet.finish(NODES[1], 0)
    await cluster.kubelet.finish(NODES[0], 0, termination(**details))


async def test_success_copies_the_termination_message_into_status():
    async with running_cluster() as cluster, running_operator(cluster):
        await cluster.create(train_job())
        await cluster.wait_phase("TrainJob", "digits-mlp", "Running")
        service = await cluster.api.get(resource_path("v1", "services", cluster.ns, "digits-mlp"))
        assert service["metadata"]["ownerReferences"][0]["kind"] == "TrainJob"
        await succeed_all(
            cluster, metrics={"accuracy/top1": 97.7}, epoch=5, lastCheckpoint="/work_dir/epoch_5.pth"
        )
        status = await cluster.wait_phase("TrainJob", "digits-mlp", "Succeeded")
        assert status["metrics"] == {"accuracy/top1": 97.7} and status["epoch"] == 5
        assert status["startTime"] and status["completionTime"] and status["restarts"] == 0
        pods = await cluster.pods()
        assert sorted(pods) == NODES  # exited pods stay, so their logs can be read
        assert sorted(cluster.kubelet.created) == NODES  # the scheduler binds them in any order


async def test_one_pod_fails_whole_gang_restarts_then_succeeds():
    async with running_cluster() as cluster, running_operator(cluster):
        await cluster.create(train_job())
        await cluster.running_pods(NODES)
        await cluster.kubelet.finish(NODES[1], 137)  # killed, no report: the operator waits a moment
        await cluster.wait_status("TrainJob", "digits-mlp", lambda s: s.get("restarts") == 1)

        async def restart_told() -> dict | None:  # the status may already show the next attempt running
            return next((e for e in await cluster.events("digits-mlp") if e["reason"] == "PodFailed"), None)

        event = await cluster.wait(restart_told, what="a PodFailed event")
        assert "node 1 (pod digits-mlp-node-1) exited with code 137" in event["message"]
        # the failed pod's log, read before the restart deleted it: the process node serves no logs, so
        # the ConfigMap says why there is none (tests/cluster reads a real container's)
        kept_path = resource_path("v1", "configmaps", cluster.ns, "digits-mlp-previous-logs")
        kept = await cluster.api.get(kept_path)
        job = await cluster.job("TrainJob", "digits-mlp")
        assert [o["uid"] for o in kept["metadata"]["ownerReferences"]] == [job["metadata"]["uid"]]
        assert kept["metadata"]["annotations"]["torchyard.dev/attempt"] == "0"
        assert list(kept["data"]) == ["node-1.log"]
        assert kept["data"]["node-1.log"].startswith("[no log of pod digits-mlp-node-1: ")
        await succeed_all(cluster, attempt=1)
        status = await cluster.wait_phase("TrainJob", "digits-mlp", "Succeeded")
        assert status["restarts"] == 1 and cond(status, "Restarting")["status"] == "False"
        assert sorted(cluster.kubelet.created) == sorted(NODES * 2)  # each pod once per attempt


async def test_backoff_exhausted_fails_and_stops_pods():
    report = termination("failed", 1, reason="RuntimeError", message="NaN loss", retryable=True)
    async with running_cluster() as cluster, running_operator(cluster):
        await cluster.create(train_job(backoffLimit=1))
        await cluster.running_pods(NODES)
        await cluster.kubelet.finish(NODES[0], 1, report)
        await cluster.running_pods(NODES, attempt=1)
        await cluster.kubelet.finish(NODES[0], 1, report)
        status = await cluster.wait_phase("TrainJob", "digits-mlp", "Failed")
        failed = cond(status, "Failed")
        assert failed["reason"] == "BackoffLimitExceeded" and "NaN loss" in failed["message"]
        pods = await cluster.wait_pods(lambda p: list(p) == [NODES[0]], what="node 1 stopped")
        assert pods[NODES[0]]["status"]["phase"] == "Failed"
        await asyncio.sleep(0.5)
        assert (await cluster.job("TrainJob", "digits-mlp"))["status"]["restarts"] == 1  # no loop


async def test_non_retryable_exit_fails_at_once_with_the_message():
    report = termination("failed", 3, reason="ConfigError", message="unknown key model.typo", retryable=False)
    async with running_cluster() as cluster, running_operator(cluster):
        await cluster.create(train_job())
        await cluster.running_pods(NODES)
        await cluster.kubelet.finish(NODES[1], 1)
        await cluster.kubelet.finish(NODES[0], 1, report)
        status = await cluster.wait_phase("TrainJob", "digits-mlp", "Failed")
        assert status["restarts"] == 0 and cond(status, "Failed")["reason"] == "NonRetryableError"
        assert "ConfigError: unknown key model.typo" in cond(status, "Failed")["message"]


async def test_restart_policy_exit_code_restarts_a_killed_node_and_fails_on_the_trainers_exit_1():
    crash = termination("failed", 1, reason="RuntimeError", message="NaN loss", retryable=True)
    async with running_cluster() as cluster, running_operator(cluster):
        await cluster.create(train_job(restartPolicy="ExitCode"))
        await cluster.running_pods(NODES)
        await cluster.kubelet.finish(NODES[1], 137)  # killed by a signal: retryable under ExitCode
        await cluster.running_pods(NODES, attempt=1)
        await cluster.kubelet.finish(NODES[0], 1, crash)  # the program failed: permanent
        status = await cluster.wait_phase("TrainJob", "digits-mlp", "Failed")
        failed = cond(status, "Failed")
        assert status["restarts"] == 1 and failed["reason"] == "RestartPolicy", status
        assert "exit code 1 is permanent under restartPolicy ExitCode" in failed["message"]


async def test_restart_policy_never_fails_the_job_at_its_first_failure():
    async with running_cluster() as cluster, running_operator(cluster):
        await cluster.create(train_job(restartPolicy="Never"))
        await cluster.running_pods(NODES)
        await cluster.kubelet.finish(NODES[1], 137)
        status = await cluster.wait_phase("TrainJob", "digits-mlp", "Failed")
        assert status["restarts"] == 0 and cond(status, "Failed")["reason"] == "RestartPolicy", status
        refused = await cluster.create_or_refusal(train_job("always", restartPolicy="Always"))
        assert refused is not None and refused.status == 422 and "spec.restartPolicy" in refused.message


async def test_an_eviction_restarts_the_gang_without_spending_the_backoff_limit():
    async with running_cluster() as cluster, running_operator(cluster):
        await cluster.create(train_job(backoffLimit=0))
        await cluster.running_pods(NODES)
        # the Eviction API, as `kubectl drain` uses it: the API server marks the pod DisruptionTarget
        # (EvictionByEvictionAPI), then deletes it; this node lets it go at once (a grace period of 0)
        eviction = {"apiVersion": "policy/v1", "kind": "Eviction",
                    "metadata": {"name": NODES[1], "namespace": cluster.ns}}  # fmt: skip
        await cluster.api.create(resource_path("v1", "pods", cluster.ns, NODES[1], "eviction"), eviction)

        async def restart_told() -> dict | None:
            events = await cluster.events("digits-mlp")
            return next((e for e in events if e["reason"] == "PodDisrupted"), None)

        event = await cluster.wait(restart_told, what="a PodDisrupted event")
        taken = "node 1 (pod digits-mlp-node-1) was taken away by Kubernetes (EvictionByEvictionAPI)"
        assert taken in event["message"], event
        await succeed_all(cluster, attempt=1)
        status = await cluster.wait_phase("TrainJob", "digits-mlp", "Succeeded")
        assert (status["restarts"], status["disruptions"]) == (1, 1), status


async def test_a_pod_template_reaches_the_pods_and_a_sidecar_does_not_speak_for_the_trainer():
    template = {"metadata": {"labels": {"team": "vision"}}, "spec": {
        "containers": [{"name": "trainer", "env": [{"name": "HF_HOME", "value": "/data"}],
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                       {"name": "shipper", "image": "busybox:1.36"}],
        "volumes": [{"name": "data", "emptyDir": {}}],
        "terminationGracePeriodSeconds": 5,
    }}  # fmt: skip
    async with running_cluster() as cluster, running_operator(cluster):
        await cluster.create(train_job(template=template))  # the API server validates the merged pods
        pods = await cluster.running_pods(NODES)
        spec = pods[NODES[0]]["spec"]
        assert [c["name"] for c in spec["containers"]] == ["trainjob", "shipper"]
        assert {"name": "HF_HOME", "value": "/data"} in spec["containers"][0]["env"]
        assert spec["terminationGracePeriodSeconds"] == 5
        assert pods[NODES[0]]["metadata"]["labels"]["team"] == "vision"
        await succeed_all(cluster, metrics={"accuracy/top1": 97.7})
        status = await cluster.wait_phase("TrainJob", "digits-mlp", "Succeeded")
        assert status["metrics"] == {"accuracy/top1": 97.7}


async def test_suspend_and_resume():
    async with running_cluster() as cluster, running_operator(cluster):
        await cluster.create(train_job())
        await cluster.running_pods(NODES)
        await cluster.patch_spec("TrainJob", "digits-mlp", suspend=True)
        status = await cluster.wait_phase("TrainJob", "digits-mlp", "Suspended")
        assert cond(status, "Suspended")["status"] == "True"
        await cluster.wait_pods(lambda p: not p, what="pods stopped")
        await cluster.patch_spec("TrainJob", "digits-mlp", suspend=False)
        await cluster.running_pods(NODES)
        status = await cluster.wait_phase("TrainJob", "digits-mlp", "Running")
        assert cond(status, "Suspended")["reason"] == "Resumed" and status["restarts"] == 0


async def test_active_deadline():
    async with running_cluster() as cluster, running_operator(cluster):
        await cluster.create(train_job(activeDeadlineSeconds=1))
        # On a loaded machine the 1 s deadline may pass before the pods report Running: check they were
        # created, not that they ran.
        status = await cluster.wait_phase("TrainJob", "digits-mlp", "Failed")
        assert cond(status, "Failed")["reason"] == "DeadlineExceeded"
        assert sorted(cluster.created) == NODES  # each created once
        await cluster.wait_pods(lambda p: not p, what="pods stopped")
        assert status["restarts"] == 0


async def test_ttl_deletes_the_job_once_and_it_is_not_recreated():
    async with running_cluster() as cluster, running_operator(cluster):
        # completionTime is stamped in whole seconds (truncated): a 1 s TTL could end a few ms after Succeeded
        # was written, before a 0.1 s poll saw it.
        await cluster.create(train_job(ttlSecondsAfterFinished=3))
        await succeed_all(cluster)
        await cluster.wait_phase("TrainJob", "digits-mlp", "Succeeded")
        await cluster.wait(lambda: _gone(cluster), timeout=10, what="job deleted")
        await cluster.wait_pods(lambda p: not p, what="pods deleted")
        await asyncio.sleep(1)
        assert await cluster.job("TrainJob", "digits-mlp") is None and not await cluster.pods()


async def _gone(cluster) -> bool:
    return await cluster.job("TrainJob", "digits-mlp") is None


async def test_operator_restarted_mid_job_no_duplicates_nothing_lost():
    async with running_cluster() as cluster:
        async with running_operator(cluster):
            await cluster.create(train_job())
            await cluster.running_pods(NODES)
            await cluster.kubelet.finish(NODES[1], 137)
            await cluster.wait_status("TrainJob", "digits-mlp", lambda s: s.get("restarts") == 1)
        # operator down: the new attempt was (maybe) not created yet
        async with running_operator(cluster):
            await succeed_all(cluster, attempt=1)
            status = await cluster.wait_phase("TrainJob", "digits-mlp", "Succeeded")
            assert status["restarts"] == 1
        assert sorted(cluster.kubelet.created) == sorted(NODES * 2)


async def test_operator_restart_while_running_changes_nothing():
    async with running_cluster() as cluster:
        async with running_operator(cluster):
            await cluster.create(train_job())
            await cluster.wait_phase("TrainJob", "digits-mlp", "Running")
        async with running_operator(cluster):
            await asyncio.sleep(1)
            await succeed_all(cluster)
            status = await cluster.wait_phase("TrainJob", "digits-mlp", "Succeeded")
        assert status["restarts"] == 0 and sorted(cluster.kubelet.created) == NODES


async def test_job_created_while_operator_down():
    async with running_cluster() as cluster:
        await cluster.create(train_job())
        async with running_operator(cluster):
            await succeed_all(cluster)
            await cluster.wait_phase("TrainJob", "digits-mlp", "Succeeded")


async def test_conflicting_child_is_reported_not_crashed():
    async with running_cluster() as cluster, running_operator(cluster):
        foreign = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": NODES[1]},
            "spec": {"containers": [{"name": "x", "image": "busybox"}]},
        }
        await cluster.api.create(resource_path("v1", "pods", cluster.ns), foreign)
        await cluster.create(train_job())
        status = await cluster.wait_status(
            "TrainJob", "digits-mlp", lambda s: cond(s, "Created").get("reason") == "ChildConflict"
        )
        assert "Pod digits-mlp-node-1 already exists" in cond(status, "Created")["message"]


INVALID = [
    ({"nodes": 0}, "spec.nodes"),
    ({"nodes": "two"}, "spec.nodes"),
    ({"nodes": 100000}, "spec.nodes"),  # one job must never render more than the shared operator can hold
    ({"procsPerNode": -1}, "spec.procsPerNode"),
    ({"procsPerNode": 1000}, "spec.procsPerNode"),
    ({"gpusPerNode": -2}, "spec.gpusPerNode"),
    ({"gpusPerNode": 65}, "spec.gpusPerNode"),
    ({"config": None}, "spec.config"),
    ({"image": ""}, "spec.image"),
    ({"backoffLimit": -1}, "spec.backoffLimit"),
    ({"activeDeadlineSeconds": 0}, "spec.activeDeadlineSeconds"),
    ({"ttlSecondsAfterFinished": -5}, "spec.ttlSecondsAfterFinished"),
    ({"cfgOptions": ["no-equals-sign"]}, "spec.cfgOptions[0]"),
    ({"cfgOptions": ["a=1", "broken"]}, "spec.cfgOptions[1]"),
    ({"resources": {"requests": {"cpu": "lots"}}}, "spec.resources.requests.cpu"),
    ({"resources": {"limits": {"memory": "2Zi"}}}, "spec.resources.limits.memory"),
    ({"resources": {"requests": {"nvidia.com/gpu": 1}}}, "spec.resources.requests.nvidia.com/gpu"),
    ({"workDir": {"mountPath": "relative"}}, "spec.workDir.mountPath"),
    ({"workDir": {"claimName": "Bad_Name"}}, "spec.workDir.claimName"),
    ({"workDir": {"unknown": 1}}, "spec.workDir.unknown"),
    ({"nodez": 2}, "spec.nodez"),
    ({"masterPort": 70000}, "spec.masterPort"),
    ({"masterPort": 0}, "spec.masterPort"),
    ({"queueName": "bad queue"}, "spec.queueName"),
    ({"schedulerName": "Bad"}, "spec.schedulerName"),
    ({"nodeSelector": {"a": "x\ny"}}, "spec.nodeSelector.a"),
    ({"imagePullSecrets": ["UPPER"]}, "spec.imagePullSecrets[0]"),
    ({"suspend": "maybe"}, "spec.suspend"),
    ({"seed": -1}, "spec.seed"),
    ({"resume": ""}, "spec.resume"),
    ({"amp": "yes please"}, "spec.amp"),
    ({"procsPerNode": 4, "gpusPerNode": 2}, "spec.procsPerNode"),
    ({"command": []}, "spec.command"),
    ({"command": ["train.py"], "config": "x.py"}, "spec.config"),
    ({"slurm": {"time": "forever"}}, "spec.slurm.time"),
    ({"slurm": {"extraArgs": ["exclusive"]}}, "spec.slurm.extraArgs[0]"),
    ({"slurm": {"partition": "a b"}}, "spec.slurm.partition"),
    ({"slurm": {"signalSeconds": 5}}, "spec.slurm.signalSeconds"),
    ({"slurm": {"time": "1", "signalSeconds": 60}}, "spec.slurm.signalSeconds"),
    ({"tolerations": "none"}, "spec.tolerations"),
    ({"image": "a\nb"}, "spec.image"),
    ({"deterministic": [1]}, "spec.deterministic"),
    ({"workDir": {"path": "a b"}}, "spec.workDir.path"),
]


async def test_invalid_objects_fail_with_the_field_path_and_get_no_pods():
    """Each is refused by the API server (the CRD's schema: 422, an unknown field: 400) or failed by the
    operator (InvalidSpec); either way the message names the field, and no pod is created."""
    assert len(INVALID) == 43
    async with running_cluster() as cluster, running_operator(cluster):
        created = []
        for i, (spec, path) in enumerate(INVALID):
            job = train_job(f"bad-{i}")
            job["spec"].update(copy.deepcopy(spec))
            refused = await cluster.create_or_refusal(job)
            if refused is None:
                created.append((i, path))
            else:
                assert refused.status in (400, 422) and path in refused.message, (i, refused.message)
        for i, path in created:
            status = await cluster.wait_phase("TrainJob", f"bad-{i}", "Failed")
            failed = cond(status, "Failed")
            assert failed["reason"] == "InvalidSpec" and path in failed["message"], (i, failed["message"])
        assert created, "the operator's own validation was not reached by any case"
        assert not await cluster.pods() and cluster.kubelet.created == []


async def test_a_sweep_is_kept_as_written_by_the_api_server_and_failed_by_the_operator_on_kubernetes():
    """slurm.sweep is Slurm's (one job array): the CRD keeps its values of any type as given, and the
    operator fails the object on Kubernetes saying where it runs, with no pod created."""
    grid = {"optim_wrapper.optimizer.lr": [0.01, 0.1], "model.act": ["relu"], "amp": [True]}
    async with running_cluster() as cluster, running_operator(cluster):
        await cluster.create(train_job("sweep", slurm={"sweep": {"grid": grid, "maxParallel": 2}}))
        status = await cluster.wait_phase("TrainJob", "sweep", "Failed")
        failed = cond(status, "Failed")
        assert failed["reason"] == "InvalidSpec", failed
        assert "spec.slurm.sweep: Kubernetes cannot run a sweep (2 runs)" in failed["message"], failed
        assert (await cluster.job("TrainJob", "sweep"))["spec"]["slurm"]["sweep"]["grid"] == grid
        assert not await cluster.pods() and cluster.kubelet.created == []


async def test_the_api_server_refuses_more_nodes_than_the_crd_allows():
    """Before, nodes had no upper bound: one job of ~55,000 nodes would render every pod at once and
    OOM-kill the shared operator, which then crash-looped on the same job."""
    async with running_cluster() as cluster:
        refused = await cluster.create_or_refusal(train_job("huge", nodes=100000))
        assert refused is not None and refused.status == 422, refused
        assert "spec.nodes" in refused.message and "4096" in refused.message, refused.message


async def test_test_job_waits_for_train_job_then_reports_metrics():
    async with running_cluster() as cluster, running_operator(cluster):
        test = make(TEST, fromTrainJob={"name": "digits-mlp", "which": "latest"})
        del test["spec"]["checkpoint"]
        await cluster.create(test)
        status = await cluster.wait_status(
            "TestJob", "digits-eval", lambda s: cond(s, "Created").get("reason") == "WaitingForTrainJob"
        )
        await cluster.volume_claim("runs")  # without it the scheduler holds the pods (claim not found)
        await cluster.create(train_job(workDir={"claimName": "runs"}))
        await succeed_all(cluster, lastCheckpoint="/work_dir/epoch_5.pth")
        await cluster.wait_phase("TrainJob", "digits-mlp", "Succeeded")
        pods = await cluster.running_pods(["digits-eval-node-0"])
        command = pods["digits-eval-node-0"]["spec"]["containers"][0]["command"]
        assert "/work_dir/last_checkpoint" in command
        report = termination(metrics={"accuracy/top1": 97.2}, checkpoint="/work_dir/epoch_5.pth")
        await cluster.kubelet.finish("digits-eval-node-0", 0, report)
        status = await cluster.wait_phase("TestJob", "digits-eval", "Succeeded")
        assert status["metrics"] == {"accuracy/top1": 97.2}
        assert status["headlineMetric"] == "accuracy/top1: 97.2"


async def test_deleting_a_job_deletes_its_pods():
    async with running_cluster() as cluster, running_operator(cluster):
        await cluster.create(train_job())
        await cluster.running_pods(NODES)
        await cluster.api.delete(job_path("TrainJob", cluster.ns, "digits-mlp"))
        await cluster.wait_pods(lambda p: not p, what="pods deleted")


async def test_metrics_and_healthz():
    import aiohttp

    from torchyard.operator.control.kubeapi import KubeApi  # noqa: F401  (the operator's client, used by the fixture)

    async with running_cluster() as cluster, running_operator(cluster, metrics_port=0) as memo:
        await cluster.create(train_job())
        await succeed_all(cluster)
        await cluster.wait_phase("TrainJob", "digits-mlp", "Succeeded")
        site = next(iter(memo.metrics_runner.sites))
        port = site._server.sockets[0].getsockname()[1]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                text = await response.text()
        assert f'torchyard_jobs_succeeded_total{{kind="TrainJob",namespace="{cluster.ns}"}} 1.0' in text
        assert f'torchyard_jobs{{kind="TrainJob",namespace="{cluster.ns}",phase="Succeeded"}} 1.0' in text
        assert "torchyard_reconcile_duration_seconds_count" in text
        async def completed_told() -> list | None:  # kopf posts events in the background, after the status
            reasons = [e["reason"] for e in await cluster.events("digits-mlp")]
            return reasons if "Completed" in reasons else None

        reasons = await cluster.wait(completed_told, what="a Completed event")
        # the real scheduler may find the pods before it has seen the fresh node: Unschedulable, then bound
        lifecycle = [reason for reason in reasons if reason != "Unschedulable"]
        assert lifecycle[:3] == ["PodsCreated", "AllNodesRunning", "Completed"]


# ---- what a real API server showed (each failed on the code before it) ------------------------------------


async def test_kubectl_apply_of_the_example_runs():
    """kubectl apply stores the whole object as a multi-line annotation; the job must not fail on it."""
    async with running_cluster() as cluster, running_operator(cluster):
        await cluster.volume_claim("runs")
        cluster.plane.kubectl("apply", "-n", cluster.ns, "-f", str(REPO / "examples/trainjob.yaml"))
        status = await cluster.wait_phase("TrainJob", "digits-mlp", "Running")
        assert not cond(status, "Failed") and status["restarts"] == 0
        job = await cluster.job("TrainJob", "digits-mlp")
        assert "\n" in job["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]


async def test_children_pass_owner_reference_admission_as_the_charts_account():
    """OwnerReferencesPermissionEnforcement: blockOwnerDeletion needs update on the job's finalizers,
    which the chart grants; the operator runs as the chart's ServiceAccount here."""
    async with running_cluster() as cluster, running_operator(cluster):
        await cluster.create(train_job())
        pods = await cluster.running_pods(NODES)
        for pod in pods.values():
            owner = pod["metadata"]["ownerReferences"][0]
            assert owner["kind"] == "TrainJob" and owner["blockOwnerDeletion"] is True


async def test_a_refused_create_is_a_condition_and_an_event_then_recovers():
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "pods"}}
    quota["spec"] = {"hard": {"pods": "1"}}
    async with running_cluster() as cluster, running_operator(cluster):
        path = resource_path("v1", "resourcequotas", cluster.ns)
        await cluster.api.create(path, quota)

        async def enforced() -> bool:  # the quota controller fills in status.hard; admission waits for it
            return bool((await cluster.api.get(f"{path}/pods")).get("status", {}).get("hard"))

        await cluster.wait(enforced, what="the quota enforced")
        await cluster.create(train_job())
        status = await cluster.wait_status(
            "TrainJob", "digits-mlp", lambda s: cond(s, "Created").get("reason") == "CreateRefused"
        )
        message = cond(status, "Created")["message"]
        assert "was refused" in message and "exceeded quota" in message, message


        async def told() -> bool:  # kopf posts events in the background, after the status write
            return "CreateRefused" in [e["reason"] for e in await cluster.events("digits-mlp")]

        await cluster.wait(told, what="a CreateRefused event")
        def one_running(pods: dict) -> bool:  # the one pod the quota allowed runs meanwhile
            return [p["status"].get("phase") for p in pods.values()] == ["Running"]

        await cluster.wait_pods(one_running, what="the one pod the quota allowed, running")
        await cluster.api.patch(f"{path}/pods", {"spec": {"hard": {"pods": "10"}}})
        await cluster.running_pods(NODES)
        await cluster.wait_phase("TrainJob", "digits-mlp", "Running")


async def test_pods_the_scheduler_cannot_place_say_why_in_the_job():
    async with running_cluster() as cluster, running_operator(cluster):
        await cluster.create(train_job(resources={"requests": {"cpu": "1000"}}))

        def says_why(status: dict) -> bool:
            # A node the scheduler has not yet seen Ready still carries its not-ready taint, and the first
            # message can name that; the job must come to say the lasting reason.
            running = cond(status, "Running")
            message = running.get("message", "")
            return running.get("reason") == "Unschedulable" and "Insufficient cpu" in message

        await cluster.wait_status("TrainJob", "digits-mlp", says_why)

        async def told() -> bool:  # kopf posts events in the background, after the status write
            return "Unschedulable" in [e["reason"] for e in await cluster.events("digits-mlp")]

        await cluster.wait(told, what="an Unschedulable event")


async def test_an_infinite_metric_leaves_the_status_writable():
    """PSNR of an exact reproduction is inf: JSON has no such number and the server refuses it."""
    test = {
        "apiVersion": "torchyard.dev/v1alpha1",
        "kind": "TestJob",
        "metadata": {"name": "exact"},
        "spec": {"image": "torchyard/trainer:0.1.0", "config": "configs/x.py", "checkpoint": "/c/best.pth"},
    }
    async with running_cluster() as cluster, running_operator(cluster):
        await cluster.create(test)
        await cluster.running_pods(["exact-node-0"])
        report = termination(metrics={"psnr": float("inf"), "ssim": 1.0})  # json.dumps writes Infinity
        await cluster.kubelet.finish("exact-node-0", 0, report)
        status = await cluster.wait_phase("TestJob", "exact", "Succeeded")
        assert status["metrics"] == {"ssim": 1.0} and status["headlineMetric"] == "psnr: inf"

        async def told() -> bool:  # the event is posted beside the status write, and may land after it
            return "MetricNotFinite" in [e["reason"] for e in await cluster.events("exact")]

        await cluster.wait(told, what="a MetricNotFinite event")
