"""The Helm chart, checked with a real helm v3: lint, render every watch mode, validate every manifest
against the Kubernetes schemas offline, and keep the chart in step with the package, the CRDs, the
operator's command line and its metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from torchyard.operator.cli.main import build_parser
from torchyard.operator.control.metrics import Metrics

from .chart_helpers import (
    CASES,
    CHART,
    DEFAULT_MODE,
    NAMESPACE,
    REPO,
    find,
    one,
    run_helm,
    served,
    values_file,
)

KUBERNETES_VERSION = "1.34.0"  # validated against this version's OpenAPI schemas (kubectl of `make tools`)
FULLNAME = "ty-torchyard"
PEERING_CRDS = "kopf.dev_peerings.yaml"


def test_chart_version_is_the_package_version():
    package = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == package and chart["appVersion"] == package, (
        f"Chart.yaml version/appVersion must be {package} (pyproject.toml)"
    )
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["trainerImage"].endswith(f":{package}")


def test_chart_crds_are_the_generated_crds():
    generated = {p.name: p.read_text() for p in (REPO / "crds").glob("*.yaml")}
    shipped = {p.name: p.read_text() for p in (CHART / "crds").glob("*.yaml")}
    assert set(shipped) == set(generated) | {PEERING_CRDS}, "run `make chart-crds`"
    for name, text in generated.items():
        assert shipped[name] == text, (
            f"charts/torchyard/crds/{name} drifted from crds/; run `make chart-crds`"
        )


@pytest.mark.parametrize("case", CASES)
def test_lint_strict(helm, tmp_path, case):
    result = run_helm(
        helm,
        "lint",
        "--strict",
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--values",
        str(values_file(tmp_path, CASES[case])),
    )
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("case", CASES)
def test_every_manifest_passes_the_kubernetes_schemas(render, case):
    manifests = render(CASES[case])
    crds = {m["spec"]["names"]["kind"]: m for m in find(manifests, "CustomResourceDefinition")}
    assert {"TrainJob", "TestJob", "KopfPeering", "ClusterKopfPeering"} <= set(crds)
    for manifest in manifests:
        kind = manifest["kind"]
        if kind in crds:  # a custom resource: its CRD's schema
            import jsonschema

            schema = crds[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            jsonschema.validate(manifest, schema)
        elif kind == "ServiceMonitor":  # the Prometheus Operator's CRD is not part of Kubernetes
            assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
            assert manifest["spec"]["endpoints"][0]["port"] == "metrics"
        else:
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_render_fails_with_a_message_on_bad_values(render):
    with pytest.raises(AssertionError, match="minItems"):
        render({"watch": {"mode": "namespaces", "namespaces": []}})


BAD_VALUES = [
    ({"replicaCount": "2"}, "/replicaCount"),
    ({"replicaCaunt": 2}, "replicaCaunt"),
    ({"image": {"tag": 1}}, "/image/tag"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"image": {"registry": "x"}}, "registry"),
    ({"watch": {"mode": "all"}}, "/watch/mode"),
    ({"watch": {"mode": "namespaces", "namespaces": ["Team_A"]}}, "/watch/namespaces/0"),
    ({"jobPolicy": {"enabled": "yes"}}, "/jobPolicy/enabled"),
    ({"watch": {"namespace": "a"}}, "namespace"),
    ({"operator": {"jsonLogs": "yes"}}, "/operator/jsonLogs"),
    ({"operator": {"metricsPort": 80}}, "/operator/metricsPort"),
    ({"operator": {"metricPort": 9000}}, "metricPort"),
    ({"peering": {"priority": "high"}}, "/peering/priority"),
    ({"resources": {"requests": {"cpu": "lots"}}}, "/resources/requests/cpu"),
    ({"resources": {"request": {"cpu": "1"}}}, "request"),
    ({"metrics": {"serviceMonitor": {"enabled": "true"}}}, "/metrics/serviceMonitor/enabled"),
    ({"metrics": {"serviceMonitor": {"interval": "often"}}}, "/metrics/serviceMonitor/interval"),
    ({"grafanaDashboard": {"enabled": 1}}, "/grafanaDashboard/enabled"),
    ({"probes": {"liveness": {"periodSeconds": 0}}}, "/probes/liveness/periodSeconds"),
    ({"podAnnotations": {"a": 1}}, "/podAnnotations/a"),
    ({"tolerations": {"key": "x"}}, "/tolerations"),
    ({"helmTest": {"enabled": "no"}}, "/helmTest/enabled"),
]


@pytest.mark.parametrize(("values", "where"), BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_schema_rejects_wrong_types_and_unknown_keys(helm, tmp_path, values, where):
    result = run_helm(
        helm, "template", "ty", str(CHART), "--values", str(values_file(tmp_path, values)), check=False
    )
    assert result.returncode != 0, f"accepted {values}"
    assert "values don't meet the specifications of the schema" in result.stderr and where in result.stderr, (
        result.stderr
    )


def _key_paths(lines: list[str]) -> list[tuple[int, list[str]]]:
    """(line number, path of keys) of every `key:` line of a block-style YAML file."""
    stack: list[tuple[int, str]] = []
    out = []
    for number, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):", line)
        if match:
            indent = len(match[1])
            stack = [(i, k) for i, k in stack if i < indent] + [(indent, match[2])]
            out.append((number, [k for _, k in stack]))
    return out


def _schema_node(schema: dict, path: list[str]) -> dict | None:
    node = schema
    for key in path:
        node = node.get("properties", {}).get(key)
        if node is None:
            return None
    return node


def test_every_value_is_documented_above_its_key():
    """Keys the chart defines need a comment right above them; inside free-form Kubernetes objects
    (resources.requests, podSecurityContext, ...) the comment of the object covers its fields."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    schema = json.loads((CHART / "values.schema.json").read_text())
    undocumented = [
        f"line {number + 1}: {'.'.join(path)}"
        for number, path in _key_paths(lines)
        if (_schema_node(schema, path[:-1]) or {}).get("additionalProperties") is False
        and not lines[number - 1].strip().startswith("#")
    ]
    assert not undocumented, "values.yaml keys without a comment right above them:\n" + "\n".join(
        undocumented
    )


def test_schema_knows_every_value_and_requires_nothing_unknown():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(value, node, path):
        if not isinstance(value, dict) or node.get("additionalProperties") is not False:
            return
        for key, item in value.items():
            assert key in node["properties"], f"{path}{key} is in values.yaml but not in values.schema.json"
            walk(item, node["properties"][key], f"{path}{key}.")
        for key in node.get("required", []):
            assert key in value, f"values.schema.json requires {path}{key}, which values.yaml lacks"

    walk(values, schema, "")


def _operator_container(manifests: list[dict]) -> dict:
    deployment = one(manifests, "Deployment", FULLNAME)
    return next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "operator")


def _operator_argv(container: dict, tmp: Path) -> list[str]:
    """The argv after `torchyard` the container runs; a shell wrapper runs for real with a stand-in
    `torchyard` that prints its arguments (so the random peering priority is drawn as in the pod)."""
    command, args = container["command"], container["args"]
    if command[0] != "/bin/sh":
        assert command == ["torchyard", "operator", "run"], command
        return ["operator", "run", *args]
    (tmp / "torchyard").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    (tmp / "torchyard").chmod(0o755)
    result = subprocess.run(
        [*command, *args], capture_output=True, text=True, env={"PATH": f"{tmp}:/usr/bin:/bin"}
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.mark.parametrize("case", CASES)
def test_the_operator_command_line_parses(render, tmp_path, case):
    """The chart's flags are the ones `torchyard operator run` (operator/cli/operator.py) accepts."""
    manifests = render(CASES[case])
    container = _operator_container(manifests)
    args = build_parser().parse_args(_operator_argv(container, tmp_path))
    values = CASES[case]
    assert args.namespace == served(values)
    assert args.metrics_port == container["ports"][0]["containerPort"] == 8080
    assert args.json_logs == values.get("operator", {}).get("jsonLogs", True)
    ha = values.get("replicaCount", 1) > 1 or values.get("peering", {}).get("enabled", False)
    assert args.peering == (values.get("peering", {}).get("name", "torchyard") if ha else None)
    if ha:
        fixed = values.get("peering", {}).get("priority")
        assert args.priority == fixed if fixed is not None else 0 <= args.priority < 65536
    probes = [container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]]
    assert probes == [{"path": "/healthz", "port": "metrics"}] * 2
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["TORCHYARD_TRAINER_IMAGE"] == "torchyard/trainer:0.1.0" and "POD_ID" in env


@pytest.mark.parametrize("case", CASES)
def test_rbac_objects_per_watch_mode(render, case):
    manifests = render(CASES[case])
    values = CASES[case]
    mode = values.get("watch", {}).get("mode", DEFAULT_MODE)
    account = one(manifests, "ServiceAccount", FULLNAME, NAMESPACE)["metadata"]["name"]
    cluster_role = one(manifests, "ClusterRole", FULLNAME)
    binding = one(manifests, "ClusterRoleBinding", FULLNAME)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    resources = {r for rule in cluster_role["rules"] for r in rule["resources"]}
    if mode == "clusterWide":
        assert not find(manifests, "Role") and not find(manifests, "RoleBinding")
        assert {
            "pods",
            "trainjobs",
            "customresourcedefinitions",
        } <= resources and "namespaces" not in resources
    else:
        assert resources == {  # read-only observation
            "customresourcedefinitions",
            "namespaces",
            "validatingadmissionpolicies",
            "validatingadmissionpolicybindings",
        }
        assert sorted(r["metadata"]["namespace"] for r in find(manifests, "Role")) == sorted(served(values))
        for namespace in served(values):
            role_binding = one(manifests, "RoleBinding", FULLNAME, namespace)
            assert (
                role_binding["roleRef"]["kind"] == "Role" and role_binding["subjects"] == binding["subjects"]
            )
    for rule in [
        r for role in find(manifests, "ClusterRole") + find(manifests, "Role") for r in role["rules"]
    ]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule


@pytest.mark.parametrize("case", CASES)
def test_high_availability_and_peering(render, case):
    manifests = render(CASES[case])
    values = CASES[case]
    replicas = values.get("replicaCount", 1)
    mode = values.get("watch", {}).get("mode", DEFAULT_MODE)
    assert one(manifests, "Deployment")["spec"]["replicas"] == replicas
    assert len(find(manifests, "PodDisruptionBudget")) == (1 if replicas > 1 else 0)
    peering = replicas > 1 or values.get("peering", {}).get("enabled", False)
    peerings = find(manifests, "ClusterKopfPeering") + find(manifests, "KopfPeering")
    if not peering:
        assert not peerings
    elif mode == "clusterWide":
        assert [p["kind"] for p in peerings] == ["ClusterKopfPeering"]
    else:
        assert {p["metadata"]["namespace"] for p in peerings} == set(served(values))


def test_the_job_policy_is_on_by_default_and_its_binding_is_labelled(render):
    manifests = render()
    policy = one(manifests, "ValidatingAdmissionPolicy", f"{FULLNAME}-jobs")
    binding = one(manifests, "ValidatingAdmissionPolicyBinding", f"{FULLNAME}-jobs")
    assert binding["spec"] == {"policyName": f"{FULLNAME}-jobs", "validationActions": ["Deny"]}
    assert binding["metadata"]["labels"]["torchyard.dev/job-policy"] == f"{FULLNAME}-jobs"  # kube/policy.py
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert not find(render(CASES["no-job-policy"]), "ValidatingAdmissionPolicy")


def test_metrics_service_servicemonitor_and_dashboard(render):
    assert not find(render(), "ServiceMonitor") and not find(render(), "ConfigMap")
    manifests = render(CASES["everything"])
    service = one(manifests, "Service", f"{FULLNAME}-metrics", NAMESPACE)
    deployment = one(manifests, "Deployment", FULLNAME)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "metrics", "protocol": "TCP"}
    ]
    monitor = one(manifests, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    dashboard = one(manifests, "ConfigMap", f"{FULLNAME}-dashboard", "monitoring")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "torchyard"}
    assert json.loads(dashboard["data"]["torchyard.json"])["uid"] == "torchyard-operator"


def test_dashboard_queries_only_metrics_the_operator_exports():
    registry = Metrics().registry
    exported = set()
    for metric in registry.collect():
        exported.add(metric.name)
        exported |= {metric.name + suffix for suffix in ("_total", "_bucket", "_count", "_sum")}
    dashboard = json.loads((CHART / "dashboards" / "torchyard.json").read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for query in queries for name in re.findall(r"\btorchyard_\w+", query)}
    assert used and used <= exported, (
        f"the dashboard queries metrics the operator does not export: {used - exported}"
    )
    metric_names = {m.name for m in registry.collect()}
    assert all(any(name.startswith(m) for m in metric_names) for name in used)
    assert {m for m in metric_names if not any(u.startswith(m) for u in used)} == set(), "an unused metric"


def test_helm_test_pod_checks_the_metrics_service(render):
    manifests = render()
    pod = one(manifests, "Pod", f"{FULLNAME}-test", NAMESPACE)
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["command"][-1]
    assert f"http://{FULLNAME}-metrics.{NAMESPACE}.svc:8080" in script and "/healthz" in script
    assert not find(render({"helmTest": {"enabled": False}}), "Pod")


def test_notes_tell_how_to_run_watch_and_uninstall(helm, tmp_path, render):
    """NOTES.txt rendered through a copy of the chart where it is a ConfigMap (helm template skips NOTES)."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "_notes.tpl").write_text('{{- define "notes" -}}\n' + notes + "{{- end }}\n")
    (chart / "templates" / "notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data:\n  notes: {{ include "notes" . | quote }}\n'
    )
    for values in ({}, CASES["namespace-list"], CASES["everything"]):
        text = one(render(values, chart=chart), "ConfigMap", "notes")["data"]["notes"]
        for needle in (
            "examples/trainjob.yaml",
            "kubectl get trainjobs -w",
            "kubectl logs",
            "/metrics",
            "helm uninstall",
            "CRDs",
            "helm test",
        ):
            assert needle in text, (needle, text)
    assert (
        "team-a, team-b"
        in one(render(CASES["namespace-list"], chart=chart), "ConfigMap", "notes")["data"]["notes"]
    )


def test_the_image_tag_defaults_to_the_app_version(render):
    assert _operator_container(render())["image"] == "torchyard/operator:0.1.0"
    assert _operator_container(render({"image": {"tag": "dev"}}))["image"] == "torchyard/operator:dev"


def test_the_pods_run_non_root_on_a_read_only_root_filesystem(render):
    pod = one(render(), "Deployment")["spec"]["template"]["spec"]
    container = _operator_container(render())
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
