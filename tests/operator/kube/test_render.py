"""Kubernetes rendering: golden files, offline schema validation, and the pod contract."""

from __future__ import annotations

import re

import kubernetes_validate
import pytest
import yaml

from torchyard.operator.api.spec import load_job
from torchyard.operator.errors import RenderError
from torchyard.operator.kube.render import KUEUE_GROUP, KUEUE_QUEUE, KUEUE_TOTAL, LABEL_JOB, render_k8s

K8S_VERSION = "1.37"


def validate_manifests(manifests: list[dict]) -> None:
    for manifest in manifests:
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def _load(repo, name):
    return load_job(yaml.safe_load((repo / "examples" / name).read_text()))


@pytest.mark.parametrize(
    ("case", "spec"),
    [
        ("minimal", {}),
        (
            "gpus-kueue",
            {
                "gpusPerNode": 4,
                "queueName": "team-a",
                "priorityClassName": "high",
                "schedulerName": "custom",
                "masterPort": 23456,
            },
        ),
        ("command", {"config": None, "command": ["tools/train.py", "configs/x.py", "--launcher", "pytorch"]}),
        (
            "pod-options",
            {
                "nodeSelector": {"pool": "gpu"},
                "tolerations": [{"key": "gpu", "operator": "Exists"}],
                "affinity": {"nodeAffinity": {}},
                "imagePullSecrets": ["regcred"],
                "serviceAccountName": "trainer",
                "resume": "/ckpt/epoch_3.pth",
                "amp": True,
            },
        ),
        ("template", {"template": {
            "metadata": {"labels": {"team": "vision"}, "annotations": {"sidecar.istio.io/inject": "false"}},
            "spec": {
                "containers": [
                    {"name": "trainer", "env": [{"name": "HF_HOME", "value": "/data/hf"}],
                     "envFrom": [{"secretRef": {"name": "wandb"}}],
                     "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": True}],
                     "securityContext": {"allowPrivilegeEscalation": False}},
                    {"name": "log-shipper", "image": "fluent/fluent-bit:3.1"},
                ],
                "initContainers": [{"name": "fetch", "image": "busybox:1.36", "command": ["true"]}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "datasets"}}],
                "securityContext": {},
                "hostNetwork": True,
                "dnsPolicy": "ClusterFirstWithHostNet",
            },
        }}),
    ],
)
def test_train_golden(train_job, golden, case, spec):
    manifests = render_k8s(train_job(**spec))
    validate_manifests(manifests)
    golden(f"k8s-train-{case}.yaml", yaml.safe_dump_all(manifests, sort_keys=False))


@pytest.mark.parametrize("which", ["best", "latest"])
def test_test_job_from_train_job(repo, golden, which):
    train, test = _load(repo, "trainjob.yaml"), _load(repo, "testjob.yaml")
    test.spec.from_train_job.which = which
    manifests = render_k8s(test, train)
    validate_manifests(manifests)
    golden(f"k8s-test-from-train-{which}.yaml", yaml.safe_dump_all(manifests, sort_keys=False))
    pod = manifests[1]
    mounts = {m["mountPath"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    # one claim holds both work dirs: one volume, two mounts (a kubelet mounts a claim once per pod, so a
    # second read-only volume of it made the test's own work dir read-only on a real node)
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["work-dir", "dshm"]
    assert mounts["/work_dir"] == {"name": "work-dir", "mountPath": "/work_dir", "subPath": "digits-mlp",
                                   "readOnly": True}  # fmt: skip
    assert "readOnly" not in mounts["/test_work_dir"]


def test_a_train_work_dir_on_another_claim_is_a_read_only_volume(repo):
    train, test = _load(repo, "trainjob.yaml"), _load(repo, "testjob.yaml")
    train.spec.work_dir.claim_name = "train-runs"
    pod = render_k8s(test, train)[1]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["train-work-dir"]["persistentVolumeClaim"] == {"claimName": "train-runs", "readOnly": True}
    mount = next(m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["mountPath"] == "/work_dir")
    assert mount["name"] == "train-work-dir" and mount["readOnly"] is True


def test_examples_render_and_validate(repo):
    validate_manifests(render_k8s(_load(repo, "trainjob.yaml")))


def test_service_and_pods(train_job):
    service, *pods = render_k8s(train_job(nodes=3, procsPerNode=2))
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert [p["metadata"]["name"] for p in pods] == [f"digits-mlp-node-{i}" for i in range(3)]
    for rank, pod in enumerate(pods):
        spec = pod["spec"]
        assert (spec["hostname"], spec["subdomain"], spec["restartPolicy"]) == (
            f"digits-mlp-node-{rank}",
            "digits-mlp",
            "Never",
        )
        labels = pod["metadata"]["labels"]
        assert labels["torchyard.dev/node-rank"] == str(rank)
        assert service["spec"]["selector"].items() <= labels.items()
        container = spec["containers"][0]
        env = {e["name"]: e["value"] for e in container["env"]}
        for prefix in ("", "PET_"):
            assert env[f"{prefix}MASTER_ADDR"] == "digits-mlp-node-0.digits-mlp"
            assert env[f"{prefix}MASTER_PORT"] == "29500"
            assert env[f"{prefix}NODE_RANK"] == str(rank)
            assert (env[f"{prefix}NNODES"], env[f"{prefix}NPROC_PER_NODE"]) == ("3", "2")
        assert container["command"][:6] == [
            "torchrun",
            "--nnodes=3",
            f"--node-rank={rank}",
            "--nproc-per-node=2",
            "--master-addr=digits-mlp-node-0.digits-mlp",
            "--master-port=29500",
        ]
        assert container["terminationMessagePolicy"] == "File"
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in spec["volumes"]


def test_kueue_pod_group(train_job):
    pods = render_k8s(train_job(nodes=2, queueName="team-a"))[1:]
    for pod in pods:
        assert pod["metadata"]["labels"][KUEUE_QUEUE] == "team-a"
        assert pod["metadata"]["labels"][KUEUE_GROUP] == "digits-mlp"
        assert pod["metadata"]["annotations"][KUEUE_TOTAL] == "2"
    assert "annotations" not in render_k8s(train_job())[1]["metadata"]


def test_gpus_become_limits(train_job):
    container = render_k8s(train_job(gpusPerNode=8))[1]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert "--nproc-per-node=8" in container["command"]


def test_work_dir_defaults_sub_path_to_job_name(train_job):
    pod = render_k8s(train_job(workDir={"claimName": "runs"}))[1]
    assert pod["spec"]["containers"][0]["volumeMounts"][0] == {
        "name": "work-dir",
        "mountPath": "/work_dir",
        "subPath": "digits-mlp",
    }
    assert pod["spec"]["volumes"][0] == {"name": "work-dir", "persistentVolumeClaim": {"claimName": "runs"}}


def _k8s_expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of container commands: $$ -> $, $(NAME) -> env value if defined."""

    def replace(match):
        token = match.group(0)
        if token == "$$":
            return "$"
        return env.get(match.group(1), token)

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", replace, text)


def test_user_strings_survive_kubernetes_expansion(train_job):
    hostile = ["$(MASTER_ADDR)", "$$(NODE_RANK)", "`id`", "$(touch /tmp/x)", "a'b\"c;d"]
    pod = render_k8s(train_job(config=None, command=["train.py", *hostile]))[1]
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    expanded = [_k8s_expand(arg, env) for arg in container["command"]]
    assert expanded[-len(hostile) :] == hostile


def test_from_train_job_needs_the_train_job(repo):
    with pytest.raises(RenderError, match="--train-job"):
        render_k8s(_load(repo, "testjob.yaml"))


def test_from_train_job_without_claim(repo, train_job):
    with pytest.raises(RenderError, match=r"no workDir\.claimName"):
        render_k8s(_load(repo, "testjob.yaml"), train_job())


def test_from_train_job_mount_path_clash(repo):
    train, test = _load(repo, "trainjob.yaml"), _load(repo, "testjob.yaml")
    test.spec.work_dir.mount_path = "/work_dir"
    with pytest.raises(RenderError, match=r"spec\.workDir\.mountPath"):
        render_k8s(test, train)


def test_a_template_merges_under_what_the_operator_owns(train_job):
    job = train_job(template={"metadata": {"labels": {"team": "vision"}}, "spec": {
        "containers": [{"name": "trainer", "env": [{"name": "HF_HOME", "value": "/data"}],
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                       {"name": "sidecar", "image": "busybox:1.36"}],
        "volumes": [{"name": "data", "emptyDir": {}}],
        "securityContext": {"runAsUser": 0},
    }})  # fmt: skip
    pod = render_k8s(job)[1]
    trainer, sidecar = pod["spec"]["containers"]
    assert (trainer["name"], trainer["command"][0], sidecar["name"]) == ("trainjob", "torchrun", "sidecar")
    names = [variable["name"] for variable in trainer["env"]]
    assert names[:2] == ["MASTER_ADDR", "MASTER_PORT"] and names[-1] == "HF_HOME"
    assert [m["name"] for m in trainer["volumeMounts"]] == ["work-dir", "dshm", "data"]
    assert [v["name"] for v in pod["spec"]["volumes"]] == ["work-dir", "dshm", "data"]
    assert pod["spec"]["securityContext"] == {"runAsUser": 0}  # the image's root, replacing uid 1000
    assert pod["spec"]["hostname"] == "digits-mlp-node-0" and pod["spec"]["restartPolicy"] == "Never"
    labels = pod["metadata"]["labels"]
    assert labels["team"] == "vision" and labels[LABEL_JOB] == "digits-mlp"
