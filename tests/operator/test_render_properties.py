"""Property: any spec that validates renders to manifests that pass schema validation and to a script that
passes `bash -n`, whatever strings it holds."""

from __future__ import annotations

import subprocess

import kubernetes_validate
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from torchyard.operator.api.spec import load_job
from torchyard.operator.errors import SpecError
from torchyard.operator.kube.render import render_k8s
from torchyard.operator.slurm.render import render_slurm

text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=20)
names = st.from_regex(r"\A[a-z][a-z0-9-]{0,20}[a-z0-9]\Z")
quantities = st.sampled_from(["1", "500m", "2Gi", "1.5", "100Mi", 3])
optional = {
    "procsPerNode": st.integers(1, 8),
    "gpusPerNode": st.integers(0, 8),
    "cfgOptions": st.lists(
        st.builds(lambda k, v: f"{k}={v}", st.from_regex(r"\A[a-z_]{1,8}(\.[a-z_]{1,8})?\Z"), text),
        max_size=3,
    ),
    "masterPort": st.integers(1, 65535),
    "resources": st.fixed_dictionaries(
        {},
        optional={
            "requests": st.fixed_dictionaries({}, optional={"cpu": quantities, "memory": quantities}),
            "limits": st.fixed_dictionaries({}, optional={"memory": quantities}),
        },
    ),
    "workDir": st.fixed_dictionaries(
        {}, optional={"claimName": names, "subPath": text, "path": st.from_regex(r"\A[a-z0-9_./-]{1,20}\Z")}
    ),
    "queueName": names,
    "priorityClassName": names,
    "nodeSelector": st.dictionaries(names, names, max_size=2),
    "resume": st.one_of(st.just("auto"), st.just("never"), text),
    "amp": st.booleans(),
    "seed": st.integers(0, 2**31),
    "deterministic": st.booleans(),
    "backoffLimit": st.integers(0, 10),
    "slurm": st.fixed_dictionaries(
        {},
        optional={
            "partition": st.from_regex(r"\A[a-z][a-z0-9_]{0,10}\Z"),
            "time": st.sampled_from(["60", "01:00:00"]),
            "extraArgs": st.lists(text.map(lambda s: "--" + s), max_size=2),
            "pythonEnv": text,
            "container": st.fixed_dictionaries(
                {"image": text}, optional={"mounts": st.lists(text, max_size=2)}
            ),
        },
    ),
}
specs = st.fixed_dictionaries({"image": text, "config": text, "nodes": st.integers(1, 12)}, optional=optional)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(name=names, spec=specs)
def test_valid_specs_render_valid_manifests_and_scripts(tmp_path_factory, name, spec):
    data = {
        "apiVersion": "torchyard.dev/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": name},
        "spec": spec,
    }
    try:
        job = load_job(data)
    except SpecError:
        assume(False)
    for manifest in render_k8s(job):
        kubernetes_validate.validate(manifest, "1.37", strict=True)
    script = tmp_path_factory.mktemp("slurm") / "job.sbatch"
    script.write_text(render_slurm(job))
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
