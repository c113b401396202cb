"""The pod informer's bookkeeping (operator/kube/informer.py): events and relists in, pods by job out. Its
list and watch run against the real API server in every test of test_backend.py."""

from __future__ import annotations

import asyncio

import pytest

from torchyard.operator.kube import informer as informer_module
from torchyard.operator.kube.informer import PodInformer, _NamespaceView
from torchyard.operator.kube.render import LABEL_ATTEMPT, render_k8s

KEY = ("default", "trainjob", "digits-mlp")


def bodies(train_job, uid_prefix: str = "u") -> list[dict]:
    pods = render_k8s(train_job())[1:]
    for rank, pod in enumerate(pods):
        pod["metadata"] |= {"uid": f"{uid_prefix}{rank}", "namespace": "default"}
        pod["metadata"]["labels"][LABEL_ATTEMPT] = "0"
        pod["status"] = {"phase": "Running"}
    return pods


def view(namespace: str | None = "default"):
    informer, woken = PodInformer(), []
    return informer, _NamespaceView(informer._pods, informer._graves, namespace, woken.append), woken


@pytest.mark.asyncio
async def test_events_keep_each_jobs_pods_and_wake_the_job(train_job):
    informer, events, woken = view()
    first, second = bodies(train_job)
    await events.event("ADDED", first)
    await events.event("ADDED", second)
    second["status"]["phase"] = "Failed"
    await events.event("MODIFIED", second)

    assert sorted((p.rank, p.phase) for p in informer.pods(KEY)) == [(0, "Running"), (1, "Failed")]
    assert woken == [KEY] * 3
    await events.event("DELETED", first)
    await events.event("DELETED", second)
    assert informer.pods(KEY) == [] and KEY not in informer._pods


@pytest.mark.asyncio
async def test_a_relist_drops_pods_deleted_while_the_watch_was_away(train_job):
    informer, events, woken = view()
    for body in bodies(train_job, "old"):
        await events.event("ADDED", body)
    other = ("team-b", "trainjob", "x")
    informer._pods[other] = {"z": object()}  # another namespace's view: a relist here leaves it alone

    await events.listing(bodies(train_job, "new")[:1])

    assert [p.uid for p in informer.pods(KEY)] == ["new0"]
    assert other in informer._pods and KEY in woken


@pytest.mark.asyncio
async def test_ready_waits_for_every_listing():
    informer = PodInformer()
    informer._listed = [asyncio.Event(), asyncio.Event()]
    informer._listed[0].set()
    waiting = asyncio.create_task(informer.ready())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    informer._listed[1].set()
    await asyncio.wait_for(waiting, 1)


@pytest.mark.asyncio
async def test_a_pod_kubernetes_took_away_is_remembered_after_its_deletion(train_job, monkeypatch):
    informer, events, _ = view()
    evicted, failed = bodies(train_job)
    evicted["status"]["conditions"] = [{"type": "DisruptionTarget", "status": "True",
                                        "reason": "EvictionByEvictionAPI"}]  # fmt: skip
    for body in (evicted, failed):
        await events.event("ADDED", body)
        await events.event("DELETED", body)
    [grave] = informer.pods(KEY)  # the plain deletion leaves nothing behind
    assert (grave.rank, grave.disruption) == (0, "EvictionByEvictionAPI") and grave.gone and grave.deleting
    await events.listing([])  # a relist does not bury it
    assert [p.name for p in informer.pods(KEY)] == [grave.name]
    later = informer_module.time.monotonic() + informer_module.GRAVE_SECONDS + 1
    monkeypatch.setattr(informer_module.time, "monotonic", lambda: later)
    assert informer.pods(KEY) == []
