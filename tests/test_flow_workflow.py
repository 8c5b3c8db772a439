"""The Workflow a pipeline becomes (src/tfk8s/flow/workflow.py), built from a stand-in of the JupyterLab pod as
the API server returns it (tests/flow_pod.json): Argo v4.1.2's published schema, strictly, and every field the
steps take from the pod."""
import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from tfk8s.cli import UsageError, UserError
from tfk8s.flow import pipeline, rights, workflow
from tfk8s.kube import tfjob_check
from tfk8s.paths import KUBE

POD = json.loads((Path(__file__).parent / "flow_pod.json").read_text())
SCHEMA = Path(workflow.__file__).resolve().parents[1] / "kube" / "schemas" / "argo-workflow-v4.1.2.json"
TEXT = "python src/main.py --steps 20 >> python src/batch_predict.py & python src/model_config.py show >> echo done"
TOKEN_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


def strict_validator():
    """Argo's published schema with every object closed: an unknown field is an error. (Argo's controller reads
    a Workflow with Go's JSON decoder, which drops a misspelt field without a word; closed, the test names it.)"""
    schema = json.loads(SCHEMA.read_text())
    schema["definitions"] = {k: tfjob_check.closed(v) for k, v in schema["definitions"].items()}
    return jsonschema.Draft202012Validator(schema)


VALIDATOR = strict_validator()


def errors(doc):
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(doc)]


def built(text=TEXT, pod=POD, name="pipeline-20261207-093000-ab12"):
    return workflow.build(copy.deepcopy(pod), pipeline.parse(text), name)


def templates(doc):
    return {t["name"]: t for t in doc["spec"]["templates"]}


def test_the_vendored_schema_is_argos_own():
    schema = json.loads(SCHEMA.read_text())
    assert "v4.1.2" in schema["$comment"] and schema["$ref"].endswith("v1alpha1.Workflow")
    assert len(schema["definitions"]) > 200


def test_workflow_passes_argos_schema():
    doc = built()
    assert errors(doc) == []


@pytest.mark.parametrize("spoil, where", [
    (lambda d: d["spec"]["templates"][1]["container"].update(workDir="/x"), "workDir"),
    (lambda d: d["spec"].update(automountServiceAccountToken="false"), "automountServiceAccountToken"),
    (lambda d: d["spec"]["templates"][0]["dag"]["tasks"][1].update(dependencies="s1-main"), "dependencies"),
    (lambda d: d.update(kind="Job"), "kind"),
])
def test_the_schema_catches_a_spoiled_workflow(spoil, where):
    doc = built()
    spoil(doc)
    found = errors(doc)
    assert found and where in " ".join(found), found


def test_metadata():
    doc = built()
    assert doc["apiVersion"] == "argoproj.io/v1alpha1" and doc["kind"] == "Workflow"
    assert doc["metadata"] == {"name": "pipeline-20261207-093000-ab12", "namespace": "alice",
                               "labels": {"app.kubernetes.io/part-of": "mnist-workshop",
                                          "mnist-workshop/pipeline": "true"}}


def test_stages_are_dag_tasks_depending_on_the_stage_before():
    doc = built()
    assert doc["spec"]["entrypoint"] == "pipeline"
    tasks = templates(doc)["pipeline"]["dag"]["tasks"]
    assert [(t["name"], t["template"], t.get("dependencies")) for t in tasks] == [
        ("s1-main", "s1-main", None),
        ("s2-batch-predict", "s2-batch-predict", ["s1-main"]),
        ("s2-model-config", "s2-model-config", ["s1-main"]),
        ("s3-echo", "s3-echo", ["s2-batch-predict", "s2-model-config"])]
    assert [t["name"] for t in doc["spec"]["templates"]] == [
        "pipeline", "s1-main", "s2-batch-predict", "s2-model-config", "s3-echo"]


def test_each_step_runs_in_the_notebooks_container_as_it_is():
    doc = built()
    notebook = POD["spec"]["containers"][0]
    without_token = [m for m in notebook["volumeMounts"] if m["mountPath"] != TOKEN_MOUNT]
    for name in ("s1-main", "s2-batch-predict", "s2-model-config", "s3-echo"):
        container = templates(doc)[name]["container"]
        assert container["image"] == notebook["image"] and "@sha256:" in container["image"]
        assert container["workingDir"] == "/mnt/nfs/work"
        assert container["env"] == notebook["env"]
        assert container["volumeMounts"] == without_token
        assert container["securityContext"] == notebook["securityContext"]
        assert set(container) == {"image", "command", "workingDir", "env", "volumeMounts", "securityContext",
                                  "resources"}
    assert templates(doc)["s1-main"]["container"]["command"] == ["python", "src/main.py", "--steps", "20"]
    assert templates(doc)["s2-model-config"]["container"]["command"] == ["python", "src/model_config.py", "show"]


def test_resources_and_deadline_are_the_trainer_jobs():
    job = yaml.safe_load((KUBE / "job.yaml").read_text())
    trainer = job["spec"]["template"]["spec"]["containers"][0]
    doc = built()
    for t in doc["spec"]["templates"][1:]:
        assert t["container"]["resources"] == trainer["resources"]
    assert doc["spec"]["activeDeadlineSeconds"] == job["spec"]["activeDeadlineSeconds"]


def test_pod_level_fields_and_no_token():
    spec = built()["spec"]
    assert spec["serviceAccountName"] == POD["spec"]["serviceAccountName"] == rights.NOTEBOOK_SERVICE_ACCOUNT
    assert spec["automountServiceAccountToken"] is False
    assert spec["executor"] == {"serviceAccountName": rights.EXECUTOR_SERVICE_ACCOUNT}
    assert spec["securityContext"] == POD["spec"]["securityContext"]
    assert spec["volumes"] == [{"name": "nfs", "persistentVolumeClaim": {"claimName": "mnist-nfs"}},
                               {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                               {"name": "home", "emptyDir": {"sizeLimit": "256Mi"}}]
    assert "kube-api-access" not in json.dumps(spec) and TOKEN_MOUNT not in json.dumps(spec)
    # podGC and ttl are left to the controller's workflowDefaults
    assert not {"podGC", "ttlStrategy"} & set(spec)


def test_a_token_volume_of_any_name_is_left_out():
    pod = copy.deepcopy(POD)
    pod["spec"]["volumes"][3]["name"] = "token"
    pod["spec"]["containers"][0]["volumeMounts"][3]["name"] = "token"
    spec = built(pod=pod)["spec"]
    assert [v["name"] for v in spec["volumes"]] == ["nfs", "tmp", "home"]


def test_only_volumes_the_container_mounts():
    pod = copy.deepcopy(POD)
    pod["spec"]["volumes"].append({"name": "seed-only", "emptyDir": {}})
    assert "seed-only" not in json.dumps(built(pod=pod))


def test_words_reach_the_container_exactly():
    """Whatever a word holds (a newline, ': ', '#', quotes, an operator, unicode), the step gets it as it is."""
    text = """python -c 'import sys; print(sys.argv)' "a: b" '# c' "line
two" '>>' "&" "{{ x }}" "é" '"q"' "- item" """
    doc = built(text)
    assert errors(doc) == []
    (step,) = doc["spec"]["templates"][1:]
    assert step["container"]["command"] == pipeline.parse(text)[0][0]


def test_new_name():
    name = workflow.new_name(0)
    assert re.fullmatch(r"pipeline-19700101-000000-[a-z0-9]{4}", name), name
    assert len({workflow.new_name() for _ in range(20)}) > 1


@pytest.mark.parametrize("name", ["", "Pipeline", "a_b", "-a", "a-", "x" * 64, "a.b"])
def test_bad_name(name):
    with pytest.raises(UsageError):
        built(name=name)


def test_pod_with_other_containers():
    pod = copy.deepcopy(POD)
    pod["spec"]["containers"].append({"name": "sidecar", "image": "busybox"})
    assert built(pod=pod)["spec"]["templates"][1]["container"]["image"] == POD["spec"]["containers"][0]["image"]
    pod["spec"]["containers"][0]["name"] = "lab"
    with pytest.raises(UserError, match="none named jupyterlab"):
        built(pod=pod)
