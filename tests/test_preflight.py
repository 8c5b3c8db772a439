"""`make instructor-preflight` against stand-ins for gcloud, crane, docker and kubectl: a healthy project and
cluster give a table of ok rows and exit 0; each thing that would fail on the day fails its row, says what
to fix, and the command exits 1 in one line.

The stand-ins answer from one JSON file (the "world"): the digests each registry holds, the enabled APIs,
the region's quotas, the CRDs and Deployments of the cluster, and what each kubeconfig may do
(`kubectl auth can-i --list`, as kubectl prints it).
"""
import copy
import json
import os
import sys
from dataclasses import replace

import pytest
import yaml

from support import REPO, run_script
from tfk8s.instructor import argo, katib, namespaces, plan, preflight
from tfk8s.kube import pins

STAND_IN = """#!{python}
import json, os, sys
world = json.load(open(os.environ["PREFLIGHT_WORLD"]))
tool, args = os.path.basename(sys.argv[0]), sys.argv[1:]
with open(os.environ["PREFLIGHT_WORLD"] + ".log", "a") as log:
    log.write(json.dumps([tool, *args]) + "\\n")
def refuse(message):
    sys.exit(message)
if tool == "crane" and args[0] == "digest":
    digest = world["digests"].get(args[1])
    print(digest) if digest else refuse(f"Error: GET {{args[1]}}: MANIFEST_UNKNOWN: manifest unknown")
elif tool == "docker" and args[:3] == ["manifest", "inspect", "--verbose"]:
    digest = world["digests"].get(args[3])
    if not digest:
        refuse(f"no such manifest: {{args[3]}}")
    print(json.dumps([{{"Ref": args[3], "Descriptor": {{"digest": "sha256:" + "0" * 64,
                                                        "platform": {{"architecture": "arm64", "os": "linux"}}}}}},
                      {{"Ref": args[3], "Descriptor": {{"digest": digest,
                                                        "platform": {{"architecture": "amd64", "os": "linux"}}}}}}]))
elif tool == "gcloud" and args[:3] == ["services", "list", "--enabled"]:
    print("\\n".join(world["apis"]))
elif tool == "gcloud" and args[:3] == ["compute", "regions", "describe"]:
    print(json.dumps({{"name": args[3], "quotas": [{{"metric": m, **q}} for m, q in world["quotas"].items()]}}))
elif tool == "kubectl":
    kubeconfig = None
    if args[0] == "--kubeconfig":
        kubeconfig, args = os.path.basename(args[1]).removesuffix(".kubeconfig"), args[2:]
    namespace = args[args.index("--namespace") + 1] if "--namespace" in args else None
    words = [a for i, a in enumerate(args) if a != "--namespace" and (i == 0 or args[i - 1] != "--namespace")]
    notfound = "Error from server (NotFound): {{}} {{!r}} not found"
    if words[:2] == ["get", "crd"]:
        words[2] in world["crds"] or refuse(notfound.format("customresourcedefinitions.apiextensions.k8s.io",
                                                            words[2]))
        print("customresourcedefinition.apiextensions.k8s.io/" + words[2])
    elif words[:2] == ["get", "configmap"]:
        found = world["configmaps"].get(words[2]) or refuse(notfound.format("configmaps", words[2]))
        print(json.dumps(found))
    elif words[:2] == ["get", "deployment"]:
        found = world["deployments"].get(words[2]) or refuse(notfound.format("deployments.apps", words[2]))
        containers = [{{"image": i}} for i in found["images"]]
        print(json.dumps({{"spec": {{"template": {{"spec": {{"containers": containers}}}}}},
                          "status": {{"replicas": found["replicas"], "readyReplicas": found["ready"]}}}}))
    elif words[:3] == ["auth", "can-i", "--list"]:
        if kubeconfig in world.get("expired", []):
            refuse("error: You must be logged in to the server (Unauthorized)")
        rights = world["rights"][kubeconfig]
        rows = rights.get(namespace, rights["elsewhere"])
        print("Resources" + " " * 40 + "Non-Resource URLs   Resource Names   Verbs")
        for resource, verbs in rows.items():
            print(f"{{resource:<49}}[]                  []               [{{' '.join(verbs)}}]")
        print(" " * 49 + "[/api/*]            []               [get]")
    else:
        refuse(f"stand-in kubectl: unexpected {{args}}")
else:
    refuse(f"stand-in {{tool}}: unexpected {{args}}")
"""

SELF = {"selfsubjectaccessreviews.authorization.k8s.io": ["create"],
        "selfsubjectrulesreviews.authorization.k8s.io": ["create"]}
DIGEST = "sha256:" + "ab" * 32


def role_rights(name, with_katib=True):
    """What `kubectl auth can-i --list` prints for the attendee's Roles, as {resource: [verbs]}."""
    texts = [namespaces.render_namespace(name)] + ([katib.render(name)] if with_katib else [])
    found = dict(SELF)
    for text in texts:
        for doc in yaml.safe_load_all(text):
            if doc and doc["kind"] == "Role":
                for rule in doc["rules"]:
                    for group in rule["apiGroups"]:
                        for resource in rule["resources"]:
                            key = f"{resource}.{group}" if group else resource
                            found[key] = sorted(set(found.get(key, [])) | set(rule["verbs"]))
    return found


def katib_images():
    return {name: [f"docker.io/kubeflowkatib/{name}:v0.19.0"] for name in katib.DEPLOYMENTS}


ARGO_IMAGES = ["quay.io/argoproj/workflow-controller:v4.1.2", argo.EXECUTOR_IMAGE]


def healthy_world():
    images = [ref for _, ref in preflight.pinned_images(the_pins=[])] + [i for v in katib_images().values() for i in v]
    images += ARGO_IMAGES
    deployments = {"training-operator": {"replicas": 1, "ready": 1, "images": ["kubeflow/training-operator:v1"]},
                   **{name: {"replicas": 1, "ready": 1, "images": images} for name, images in katib_images().items()},
                   argo.CONTROLLER: {"replicas": 1, "ready": 1, "images": ARGO_IMAGES[:1]}}
    the_plan = plan.make_plan(2, plan.MACHINE_TYPE)
    # A pinned reference resolves to its own digest; a tag to DIGEST.
    digests = {ref: ref.partition("@")[2] or DIGEST for ref in images}
    return {"digests": digests, "apis": list(preflight.APIS) + ["storage.googleapis.com"],
            "quotas": {"CPUS": {"limit": the_plan.nodes * the_plan.machine.vcpus, "usage": 8.0},
                       "N2_CPUS": {"limit": 24, "usage": 0}},
            "crds": ["tfjobs.kubeflow.org", *katib.CRDS, *argo.CRDS], "deployments": deployments,
            "configmaps": {"workflow-controller-configmap": yaml.safe_load(argo.config_text())},
            "rights": {name: {name: role_rights(name), "elsewhere": dict(SELF)} for name in ("alice", "bob")}}


@pytest.fixture
def world(tmp_path):
    """(run, the world to edit): run() runs the preflight against the stand-ins answering from the world."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("gcloud", "crane", "docker", "kubectl"):
        (bin_dir / tool).write_text(STAND_IN.format(python=sys.executable))
        (bin_dir / tool).chmod(0o755)
    configs = tmp_path / "instructor"
    configs.mkdir()
    for name in ("alice", "bob"):
        (configs / f"{name}.kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    state = healthy_world()
    path = tmp_path / "world.json"

    # The repository's pinned-images.yaml as it is before `make instructor-pin-images`: no digests.
    unpinned = tmp_path / "pinned-images.yaml"
    unpinned.write_text(pins.dump([replace(p, digest="") for p in pins.read()]))

    def run(without=(), pins=unpinned):
        path.write_text(json.dumps(state))
        for tool in without:
            (bin_dir / tool).unlink()
        env = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin", "PREFLIGHT_WORLD": str(path)}
        return run_script("instructor.py", "preflight", "--project", "workshop-project", "--kubeconfigs", configs,
                          "--pins", pins, env=env, timeout=300)
    return run, state


def rows(result):
    """{check: (result, detail)} from the printed table."""
    lines = result.stdout.splitlines()
    width = lines[0].index("result")
    found = {}
    for line in lines[1:]:
        if line.startswith("all ") and "checks passed" in line:
            continue
        check, rest = line[:width].strip(), line[width:]
        status, _, detail = rest.partition("  ")
        found[check] = (status.strip(), detail.strip())
    return found


def test_a_healthy_project_and_cluster_pass_every_row(world):
    run, _ = world
    result = run()
    assert result.returncode == 0, result.stdout + result.stderr
    table = rows(result)
    assert all(status == "ok" for status, _ in table.values()), table
    checks = set(table)
    assert {"image: trainer base (src/Dockerfile)", "image: serving (kube/serving.yaml)",
            "image: NFS server (namespaces.NFS_IMAGE)", "API container.googleapis.com",
            "API artifactregistry.googleapis.com", "CPU quota CPUS in europe-west1", "training operator",
            "Katib katib-controller", "image: Katib katib-controller", "Argo workflow-controller", "Argo config",
            "image: Argo executor", "image: Argo workflow-controller", "kubeconfig alice.kubeconfig",
            "kubeconfig bob.kubeconfig"} <= checks
    # A tag (pinned-images.yaml has no digest yet) is resolved and the command that pins it named; the trainer's
    # base is pinned already.
    assert f"tensorflow/serving:2.20.0 is {DIGEST} (the tag only is pinned: make instructor-pin-images pins it " \
           "in pinned-images.yaml)" == table["image: serving (kube/serving.yaml)"][1]
    assert table["image: trainer base (src/Dockerfile)"][1] == preflight.dockerfile_base()
    assert result.stdout.splitlines()[-1] == f"all {len(table)} checks passed"


@pytest.mark.parametrize("registry, result, detail", [
    (DIGEST, "ok", f"tensorflow/serving:2.20.0@{DIGEST}"),
    ("sha256:" + "cd" * 32, "FAIL", f"tensorflow/serving:2.20.0@{DIGEST} resolves to sha256:{'cd' * 32}: "
                                    "the pin names another image"),
], ids=["the-pinned-digest", "another-digest"])
def test_the_serving_row_checks_the_digest_pinned_images_yaml_records(world, tmp_path, registry, result, detail):
    run, state = world
    file = tmp_path / "pinned.yaml"
    pinned = pins.with_digests(pins.read(tmp_path / "pinned-images.yaml"), {"tensorflow/serving:2.20.0": DIGEST})
    file.write_text(pins.dump(pinned))
    state["digests"][f"tensorflow/serving:2.20.0@{DIGEST}"] = registry
    assert rows(run(pins=file))["image: serving (kube/serving.yaml)"] == (result, detail)


def test_without_crane_docker_resolves_the_linux_amd64_image(world):
    run, _ = world
    result = run(without=("crane",))
    assert result.returncode == 0, result.stdout + result.stderr
    assert DIGEST in rows(result)["image: serving (kube/serving.yaml)"][1]


def test_without_katib_its_row_says_so_and_nothing_of_katib_is_asked(world):
    run, state = world
    state["crds"] = ["tfjobs.kubeflow.org"]
    for name in ("alice", "bob"):
        state["rights"][name][name] = role_rights(name, with_katib=False)
    result = run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert rows(result)["Katib"] == ("-", "not installed (optional: make instructor-katib)")


def test_without_argo_its_row_says_so(world):
    run, state = world
    state["crds"] = [c for c in state["crds"] if c not in argo.CRDS]
    result = run()
    assert result.returncode == 0, result.stdout + result.stderr
    table = rows(result)
    assert table["Argo Workflows"] == ("-", "not installed (notebook pipelines: make instructor-argo)")
    assert not [c for c in table if c.startswith(("Argo ", "image: Argo")) and c != "Argo Workflows"]


def missing_image(state):
    state["digests"].pop("tensorflow/serving:2.20.0")


def disabled_api(state):
    state["apis"].remove("artifactregistry.googleapis.com")


def short_quota(state):
    state["quotas"]["CPUS"]["limit"] = 24


def operator_down(state):
    state["deployments"]["training-operator"]["ready"] = 0


def no_operator(state):
    state["crds"].remove("tfjobs.kubeflow.org")


def katib_down(state):
    state["deployments"]["katib-controller"]["ready"] = 0


def argo_down(state):
    state["deployments"][argo.CONTROLLER]["ready"] = 0


def argo_stock_config(state):
    state["configmaps"]["workflow-controller-configmap"].pop("data")


def missing_right(state):
    del state["rights"]["alice"]["alice"]["tfjobs.kubeflow.org"]


def secrets_granted(state):
    state["rights"]["bob"]["bob"]["secrets"] = ["get", "list"]


def other_namespace(state):
    state["rights"]["bob"]["elsewhere"]["pods"] = ["get", "list"]


def expired(state):
    state["expired"] = ["alice"]


def wrong_pin(state):
    state["digests"][preflight.dockerfile_base()] = DIGEST


@pytest.mark.parametrize("breaks, check, fragments", [
    (missing_image, "image: serving (kube/serving.yaml)",
     ["tensorflow/serving:2.20.0: Error: GET tensorflow/serving:2.20.0: MANIFEST_UNKNOWN",
      "pin a version that exists"]),
    (wrong_pin, "image: trainer base (src/Dockerfile)", ["the pin names another image"]),
    (disabled_api, "API artifactregistry.googleapis.com",
     ["not enabled: gcloud services enable artifactregistry.googleapis.com --project workshop-project"]),
    (short_quota, "CPU quota CPUS in europe-west1", ["limit 24, in use 8; the plan needs", "ask for"]),
    (operator_down, "training operator", ["0 of 1 replicas ready"]),
    (no_operator, "training operator", ["no TFJob CRD: make instructor-operator"]),
    (katib_down, "Katib katib-controller", ["0 of 1 replicas ready"]),
    (argo_down, "Argo workflow-controller", ["0 of 1 replicas ready"]),
    (argo_stock_config, "Argo config", ["is not the workshop's", "make instructor-argo"]),
    (missing_right, "kubeconfig alice.kubeconfig",
     ["may not create tfjobs.kubeflow.org", "make instructor-namespaces ATTENDEES=alice"]),
    (secrets_granted, "kubeconfig bob.kubeconfig", ["MAY get secrets, list secrets"]),
    (other_namespace, "kubeconfig bob.kubeconfig", ["has rights in namespace workshop-storage (pods)"]),
    (expired, "kubeconfig alice.kubeconfig",
     ["You must be logged in to the server (Unauthorized)", "make instructor-kubeconfigs ATTENDEES=alice"]),
])
def test_each_failure_fails_its_row_says_what_to_fix_and_exits_1(world, breaks, check, fragments):
    run, state = world
    healthy = copy.deepcopy(state)
    breaks(state)
    result = run()
    assert result.returncode == 1, result.stdout + result.stderr
    table = rows(result)
    status, detail = table[check]
    assert status == "FAIL", table
    for fragment in fragments:
        assert fragment in detail, detail
    assert [c for c, (s, _) in table.items() if s == "FAIL"] == [check]  # the others still pass
    assert result.stderr.strip() == f"error: 1 of {len(table)} checks failed: {check}"
    assert state != healthy


def test_no_kubeconfigs_and_no_count_is_one_line(tmp_path):
    result = run_script("instructor.py", "preflight", "--project", "p", "--kubeconfigs", tmp_path,
                        env={"PATH": f"{REPO / 'tests'}{os.pathsep}{os.environ['PATH']}"})
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: ")


# ---------------------------------------------------------------- the registry: a repository each

GCLOUD = """#!/bin/sh
echo "$*" >> "{log}"
case "$*" in *"repositories create workshop-bob"*)
  echo "ERROR: (gcloud.artifacts.repositories.create) ALREADY_EXISTS: the repository already exists" >&2; exit 1;;
esac
case "$*" in *"member=user:carol"*)
  echo "ERROR: (gcloud.artifacts.repositories.add-iam-policy-binding) INVALID_ARGUMENT: no such user" >&2; exit 1;;
esac
"""


def stand_in_gcloud(tmp_path):
    bin_dir = tmp_path / "gbin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(GCLOUD.format(log=tmp_path / "gcloud.log"))
    (bin_dir / "gcloud").chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin"}


def test_each_attendee_gets_a_repository_of_their_own_with_immutable_tags_they_alone_write(tmp_path):
    from support import make
    result = make("instructor-registry", "ACCOUNTS=alice=alice@example.com bob=bob@example.com", "PROJECT=proj",
                  "NODE_SA=nodes@proj.iam.gserviceaccount.com", env=stand_in_gcloud(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    calls = (tmp_path / "gcloud.log").read_text().splitlines()
    where = "--location europe --project proj"
    assert calls == [
        f"artifacts repositories create workshop-alice --repository-format=docker --immutable-tags "
        f"--description=the workshop image of alice {where}",
        f"artifacts repositories add-iam-policy-binding workshop-alice {where} --member=user:alice@example.com "
        "--role=roles/artifactregistry.writer",
        f"artifacts repositories add-iam-policy-binding workshop-alice {where} "
        "--member=serviceAccount:nodes@proj.iam.gserviceaccount.com --role=roles/artifactregistry.reader",
        f"artifacts repositories create workshop-bob --repository-format=docker --immutable-tags "
        f"--description=the workshop image of bob {where}",
        f"artifacts repositories update workshop-bob --immutable-tags {where}",  # it existed: its tags made immutable
        f"artifacts repositories add-iam-policy-binding workshop-bob {where} --member=user:bob@example.com "
        "--role=roles/artifactregistry.writer",
        f"artifacts repositories add-iam-policy-binding workshop-bob {where} "
        "--member=serviceAccount:nodes@proj.iam.gserviceaccount.com --role=roles/artifactregistry.reader"]
    assert "alice: IMAGE=europe-docker.pkg.dev/proj/workshop-alice/mnist" in result.stdout.splitlines()
    assert namespaces.attendee_image("bob", "proj") == "europe-docker.pkg.dev/proj/workshop-bob/mnist"


@pytest.mark.parametrize("accounts, fragment", [
    (["alice"], "'alice' is not NAME=EMAIL"),
    (["Alice=alice@example.com"], "'Alice' cannot be an attendee's namespace"),
    (["carol=carol@example.com"], "INVALID_ARGUMENT: no such user"),
])
def test_a_bad_account_or_a_refused_binding_is_one_line(tmp_path, accounts, fragment):
    from support import assert_one_line_error
    result = run_script("instructor.py", "registry", "--project", "proj", "--node_service_account", "n@p.com",
                        *accounts, env=stand_in_gcloud(tmp_path))
    assert_one_line_error(result, fragment)
