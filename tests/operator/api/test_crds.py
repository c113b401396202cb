"""CRDs: generated from the models, checked in without drift, valid apiextensions v1, structural."""

from __future__ import annotations

import jsonschema
import kubernetes_validate
import pytest
import yaml

from torchyard.operator.api.crds import crd_filename, render_crd, render_crds
from torchyard.operator.api.spec import KINDS


def test_checked_in_crds_match_the_models(repo):
    for name, text in render_crds().items():
        path = repo / "crds" / name
        assert path.exists() and path.read_text() == text, (
            f"{path} drifted from operator/api/spec.py; regenerate with `torchyard crds --out crds/`"
        )


@pytest.mark.parametrize("kind", KINDS)
def test_crd_is_valid_apiextensions_v1(kind):
    kubernetes_validate.validate(render_crd(kind), "1.37", strict=True)


def _walk(schema: dict, path: str = "", inside_preserved: bool = False):
    yield path, schema, inside_preserved
    preserved = inside_preserved or schema.get("x-kubernetes-preserve-unknown-fields", False)
    for name, child in schema.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}", preserved)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from _walk(schema[key], f"{path}[{key}]", preserved)


@pytest.mark.parametrize("kind", KINDS)
def test_crd_schema_is_structural(kind):
    schema = render_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node, _ in _walk(schema):
        if node.get("x-kubernetes-int-or-string"):
            assert node["anyOf"] == [{"type": "integer"}, {"type": "string"}] and "type" not in node, path
            continue
        if path.endswith("sweep.grid[additionalProperties][items]"):
            # a scalar of any type (the model checks it); a structural schema lets such a node go untyped
            assert node == {"x-kubernetes-preserve-unknown-fields": True}, path
            continue
        assert "type" in node, f"{path} has no type"
        assert not {"anyOf", "oneOf", "allOf", "$ref", "const", "title"} & node.keys(), path
        if node.get("x-kubernetes-preserve-unknown-fields"):
            # Kubernetes objects of their own: the model checks what it owns, the API server the rest
            free_form = ("affinity", "tolerations[items]", "template.spec")
            assert path.endswith(free_form), f"{path} should not be free-form"
    assert schema["properties"]["metadata"] == {"type": "object"}


def test_immutable_fields():
    spec = render_crd("TrainJob")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for name in ("nodes", "procsPerNode", "image", "config"):
        assert spec["properties"][name]["x-kubernetes-validations"][0]["rule"] == "self == oldSelf", name
    assert "x-kubernetes-validations" not in spec["properties"]["suspend"]


def test_names_columns_and_status():
    for kind, plural, short in ((k, v.plural, v.short_name) for k, v in KINDS.items()):
        crd = render_crd(kind)
        assert crd["metadata"]["name"] == f"{plural}.torchyard.dev"
        assert crd["spec"]["names"]["shortNames"] == [short]
        assert crd["spec"]["names"]["categories"] == ["torchyard"]
        version = crd["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        columns = [c["name"] for c in version["additionalPrinterColumns"]]
        assert columns[:3] == ["Phase", "Nodes", "Restarts"] and columns[-1] == "Age"
    assert "Metric" in [
        c["name"] for c in render_crd("TestJob")["spec"]["versions"][0]["additionalPrinterColumns"]
    ]


def _to_json_schema(node):
    """OpenAPI `nullable` -> JSON schema, so jsonschema can check objects against the CRD schema."""
    if isinstance(node, list):
        return [_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_json_schema(v) for k, v in node.items() if not k.startswith("x-") and k != "nullable"}
    if node.get("nullable"):
        out = {"anyOf": [out, {"type": "null"}]}
    return out


@pytest.mark.parametrize("example", ["trainjob.yaml", "testjob.yaml"])
def test_examples_match_the_crd_schema(repo, example):
    data = yaml.safe_load((repo / "examples" / example).read_text())
    crd = yaml.safe_load((repo / "crds" / crd_filename(data["kind"])).read_text())
    schema = _to_json_schema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    jsonschema.validate(data, schema)
