"""The capacity plan: its figures are the manifests' own, its nodes hold every pod whatever the scheduler does.

The per-step sums are recomputed here from kube/ with the test's own
arithmetic; the node sizes are checked against GKE's published reservations
(the GKE autoscaler's own figures for e2-standard-4, -8 and -16); the node
count is put to a scheduler that spreads pods (as GKE's default profile does)
in random orders; and the cluster command and quota in the instructor's guide
are the plan's, so they cannot drift from the manifests.
"""
import math
import random
import re

import pytest
import yaml

from support import (
    REPO,
    attendee_objects,
    katib_experiment,
    make,
    pod_templates,
    pods_of,
    quantity,
    rendered,
    requested,
)
from tfk8s.instructor import argo, katib, namespaces, plan
from tfk8s.kube.resources import GI, MI
from tfk8s.sweep import trials as sweep_trials

INSTRUCTOR_GUIDE = REPO / "docs" / "instructor.md"


# Katib v0.19's defaults for a container it builds (pkg/apis/config/v1beta1/defaults.go), with katib-config's
# 1Gi memory limit for the TensorFlowEvent collector.
KATIB_DEFAULT = {"requests": {"cpu": "50m", "memory": "10Mi", "ephemeral-storage": "500Mi"},
                 "limits": {"cpu": "500m", "memory": "100Mi", "ephemeral-storage": "5Gi"}}
COLLECTOR = {"requests": KATIB_DEFAULT["requests"], "limits": {**KATIB_DEFAULT["limits"], "memory": "1Gi"}}


def jupyterlab():
    """The attendee's JupyterLab pod, as templated/instructor/notebook.yaml.j2 renders it."""
    docs = yaml.safe_load_all(namespaces.render_notebook("alice", "r.example.com/nb@sha256:" + "0" * 64))
    return [next(d for d in docs if d and d["kind"] == "Deployment")["spec"]["template"]]


def pipeline_step():
    """One notebook pipeline step's pod: kube/job.yaml's trainer resources in main, and Argo's init and wait
    containers at the workshop's executor resources (instructor/argo.py)."""
    trainer = pods_of("job.yaml")[0]["spec"]["containers"][0]["resources"]
    executor = {"resources": argo.EXECUTOR_RESOURCES}
    return {"spec": {"initContainers": [executor], "containers": [executor, {"resources": trainer}]}}


def katib_trial():
    """A Katib trial's pods: kube/tfjob.yaml's, the Chief with the metrics collector container added."""
    chief, *workers = pods_of("tfjob.yaml")
    chief = {"spec": {"containers": [*chief["spec"]["containers"], {"resources": COLLECTOR}]}}
    return [chief, *workers]


def test_each_step_is_the_standing_pods_plus_its_own_as_the_manifests_say():
    most = plan.hpa_maximum()
    standing = pods_of("tensorboard.yaml") + pods_of("serving.yaml", replicas=most) + jupyterlab()
    trial = pods_of("tfjob.yaml")  # kube/tfjob.yaml: a Chief and 2 Workers, as templated/values.yaml's workers: 2
    suggestion = {"spec": {"containers": [{"resources": KATIB_DEFAULT}]}}
    expected = {"deploy": pods_of("job.yaml"), "TFJob,": trial, "PS TFJob": pods_of("tfjob-ps.yaml"),
                "sweep": trial * plan.SWEEP_PARALLEL, "retrain": pods_of("retrain-cronjob.yaml"),
                "batch": pods_of("batch-predict.yaml"), "serve": [], "Katib": katib_trial() * 2 + [suggestion],
                "notebook": [pipeline_step()] * 2}
    rows = plan.peaks()
    assert len(rows) == len(expected)
    for step, usage in rows:
        (own,) = [pods for key, pods in expected.items() if step.name.startswith(key)]
        pods = standing + own
        assert usage.pods == len(pods), step.name
        assert usage.requests_cpu / 1000 == pytest.approx(requested(pods, "requests", "cpu")), step.name
        assert usage.requests_memory == pytest.approx(requested(pods, "requests", "memory")), step.name
        assert usage.limits_cpu / 1000 == pytest.approx(requested(pods, "limits", "cpu")), step.name
        assert usage.limits_memory == pytest.approx(requested(pods, "limits", "memory")), step.name
        assert usage.requests_ephemeral == pytest.approx(requested(pods, "requests", "ephemeral-storage")), step.name
        assert usage.limits_ephemeral == pytest.approx(requested(pods, "limits", "ephemeral-storage")), step.name
    busiest = max(rows, key=lambda row: row[1].requests_cpu)
    # 6 trainers, 2 collectors, the suggestion, 4 servers, TensorBoard, JupyterLab
    assert busiest[0].targets == "katib-sweep" and busiest[1].requests_cpu == 8500 and busiest[1].pods == 13
    (notebook,) = [u for step, u in rows if step.name.startswith("notebook")]
    assert notebook.pods == 8 and notebook.requests_cpu == 4550  # 2 x (1 + 0.1 wait) beside the standing 2.35


def test_the_sweep_step_follows_sweep_parallel_and_the_values_files_workers():
    (sweep,) = [s for s in plan.steps(3) if s.targets == "sweep"]
    assert len(sweep.pods) == 3 * 3  # Chief + 2 Workers per trial
    # one more trial of three 1-CPU pods (beyond Katib's two trials, which stay at values.yaml's parallelTrialCount)
    assert plan.quota(3).requests_cpu == plan.quota(2).requests_cpu + 3000 - 150


@pytest.mark.parametrize("machine,cpu,memory_mib", [
    # GKE's reservations as its cluster autoscaler predicts them (CPU exact; memory: the estimate without
    # the Container-Optimized OS correction, which takes at most 248 MiB more).
    ("e2-standard-4", 3920, 13325), ("e2-standard-8", 7910, 28470), ("e2-standard-16", 15890, 58760)])
def test_node_allocatable_follows_gkes_reservations(machine, cpu, memory_mib):
    found_cpu, found_memory = plan.machine(machine).allocatable()
    assert found_cpu == cpu
    assert memory_mib - 250 <= found_memory / MI <= memory_mib


def spread(pods, nodes, capacity, rng):
    """A scheduler that spreads: each pod to a node with room, the emptiest (or any, at random)."""
    free = [[capacity[0], capacity[1]] for _ in range(nodes)]
    for cpu, memory in pods:
        fitting = [n for n in free if n[0] >= cpu and n[1] >= memory]
        if not fitting:
            return False
        node = max(fitting, key=lambda n: n[0]) if rng.random() < 0.5 else rng.choice(fitting)
        node[0] -= cpu
        node[1] -= memory
    return True


@pytest.mark.parametrize("attendees,machine", [(20, "e2-standard-16"), (20, "e2-standard-8"), (7, "n2-standard-4")])
def test_the_planned_nodes_hold_every_pod_in_any_order_and_spread(attendees, machine):
    found = plan.make_plan(attendees, machine)
    steps = {s.name: s for s, _ in found.rows}
    busiest = max(found.rows, key=lambda row: row[1].requests_cpu)[0]
    pods = [(p.requests_cpu, p.requests_memory) for p in
            (plan.standing_pods() + steps[busiest.name].pods) * attendees
            + plan.storage_pods(attendees) + plan.addon_pods()]
    rng = random.Random(7)
    for _ in range(30):
        rng.shuffle(pods)
        assert spread(pods, found.nodes, found.per_node, rng), (machine, found.nodes)


def plan_output(*args):
    result = make("instructor-plan", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_instructor_plan_prints_each_step_the_quota_the_nodes_and_the_cpu_quota():
    out = plan_output("ATTENDEES=20")
    assert re.search(r"^  sweep, 2 trials at once\s+sweep\s+12\s+8\.35\s+15\.5\s+22\s+32$", out, re.M)
    assert re.search(r"^  Katib, 2 trials \+ collectors \+ suggestion\s+katib-sweep\s+13\s+8\.5\s+15\.5\s+23\.5"
                     r"\s+34\.1  <- busiest$", out, re.M)
    assert re.search(r"^  PS TFJob, Chief \+ 2 Workers \+ PS\s+tfjob-ps\s+10\s+6\.35\s+11\.5", out, re.M)
    assert re.search(r"^  notebook pipeline: two steps side by side\s+jupyter \(flow\.py run\)\s+8\s+4\.55\s+7\.6"
                     r"\s+15\s+17$", out, re.M)
    assert "requests.cpu 8500m, requests.memory 15902Mi, limits.cpu 23500m, limits.memory 34916Mi, pods 13, " \
           "requests.storage 10Gi" in out
    assert "workflows.argoproj.io 20, workflowtaskresults.argoproj.io 80" in out
    found = plan.make_plan(20, plan.MACHINE_TYPE)
    assert f"nodes: {found.nodes}," in out
    assert f"regional CPU quota: {found.nodes * 16} CPUS in europe-west1 ({found.nodes} x 16 vCPU)" in out
    assert found.create_command() in out
    assert "--enable-dataplane-v2" in found.create_command()  # NetworkPolicy is enforced
    filestore = plan_output("ATTENDEES=3", "RWX_CLASS=standard-rwx")
    assert "storage: 3 Filestore volumes of class standard-rwx, 1Ti each" in filestore
    assert "--addons GcpFilestoreCsiDriver" in filestore


@pytest.mark.parametrize("args,fragment", [
    (["ATTENDEES=twenty"], "'twenty' is not a number of attendees"),
    (["ATTENDEES=alice bob"], "'alice bob' is not a number of attendees"),
    ([], "'' is not a number of attendees"),
    (["ATTENDEES=0"], "at least 1"),
    (["ATTENDEES=20", "MACHINE_TYPE=e2-mega-8"], "unknown machine type 'e2-mega-8'"),
    (["ATTENDEES=20", "MACHINE_TYPE=e2-standard-6"], "unknown machine type 'e2-standard-6'"),
    (["ATTENDEES=20", "MACHINE_TYPE=e2-highcpu-2"], "does not fit one e2-highcpu-2 node"),
    (["ATTENDEES=20", "RWX_CLASS=premium-rwx", "RWX_SIZE=1Ti"], "below the smallest premium-rwx volume (2560Gi)"),
])
def test_make_instructor_plan_refuses_bad_input_in_one_line(args, fragment):
    result = make("instructor-plan", *args)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr
    assert not result.stdout.strip().startswith("Capacity plan")


def test_the_instructors_guide_shows_the_plans_cluster_command_quota_and_busiest_step():
    guide = INSTRUCTOR_GUIDE.read_text()
    found = plan.make_plan(20, plan.MACHINE_TYPE)
    assert found.create_command() in guide
    assert f"make instructor-plan ATTENDEES=20 MACHINE_TYPE={plan.MACHINE_TYPE}" in guide
    hard = plan.quota_hard()
    for key in ("requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "pods"):
        assert f"{key} {hard[key]}" in guide, key
    assert f"{found.nodes * found.machine.vcpus} CPUS" in guide
    busiest = max(found.rows, key=lambda row: row[1].requests_cpu)[1]
    assert f"{busiest.requests_cpu / 1000:g} vCPU and {round(busiest.requests_memory / GI, 2):g} GiB" in guide


def test_memory_figures_are_whole_mebibytes():
    assert quantity(plan.quota_hard()["requests.memory"]) % MI == 0


# ---------------------------------------------------------------- objects and the node's disk

def test_the_quota_holds_every_step_cpu_memory_disk_and_pods():
    hard = {k: quantity(v) for k, v in plan.quota_hard().items()}
    for step, usage in plan.peaks():
        for key, value in usage.as_quota().items():
            assert value / (1000 if key.endswith("cpu") else 1) <= hard[key], (step.name, key)
    for key in ("requests.ephemeral-storage", "limits.ephemeral-storage"):  # and the busiest step exactly
        assert hard[key] == max(u.as_quota()[key] for _, u in plan.peaks())


def test_every_kind_the_attendee_may_create_has_a_count_in_the_quota():
    quota = next(d for d in attendee_objects("alice") if d["kind"] == "ResourceQuota")["spec"]["hard"]
    roles = [d for d in attendee_objects("alice") if d["kind"] == "Role"]
    roles += [d for d in yaml.safe_load_all(katib.render("alice")) if d and d["kind"] == "Role"]
    roles += [d for d in yaml.safe_load_all(namespaces.render_notebook("alice")) if d and d["kind"] == "Role"]
    kinds = {(group, resource) for role in roles for rule in role["rules"] if "create" in rule["verbs"]
             for group in rule["apiGroups"] for resource in rule["resources"] if "/" not in resource}
    kinds.add(("apps", "replicasets"))  # made by the Deployments the attendee creates
    assert {("kubeflow.org", "tfjobs"), ("kubeflow.org", "experiments"), ("batch", "jobs"), ("", "services"),
            ("policy", "poddisruptionbudgets"), ("argoproj.io", "workflows"),
            ("argoproj.io", "workflowtaskresults")} <= kinds
    for group, resource in kinds:
        counted = [resource] if not group else []
        counted.append(f"count/{resource}.{group}" if group else f"count/{resource}")
        assert any(key in quota for key in counted), (group, resource)
    # The one Secret is the instructor's: Argo's executor token (notebook.yaml.j2); kube-root-ca.crt is in every
    # namespace.
    assert quota["secrets"] == "1" and int(quota["configmaps"]) >= 2


def test_the_object_counts_are_every_step_done_and_nothing_cleaned_up():
    values = yaml.safe_load((REPO / "templated" / "values.yaml").read_text())
    trials = math.prod(len(v) for v in values["grid"].values())
    katib_trials = values.get("katib", {}).get("maxTrialCount", trials)
    hard = plan.quota_hard()
    # kube/tfjob.yaml and tfjob-ps.yaml, the sweep's trials, Katib's trials
    assert int(hard["count/tfjobs.kubeflow.org"]) == 2 + trials + katib_trials
    # one headless Service per TFJob replica (Chief + 2 Workers; + PS), TensorBoard's, serving's, the suggestion's
    assert int(hard["services"]) == 3 + 4 + (trials + katib_trials) * 3 + 2 + 1
    assert int(hard["count/jobs.batch"]) == 2 + 3 + 3 + 1 + 1  # Job, batch Job, the CronJob's history, 2 running


def test_every_emptydir_has_a_size_limit_and_every_container_states_its_disk():
    docs = rendered() + [d for d in yaml.safe_load_all(namespaces.render_nfs_server("alice")) if d]
    specs = [t["spec"] for d in docs for _, t in pod_templates(d)]
    specs.append(sweep_trials.tfjob(sweep_trials.load_base(), {}, "r.example.com/m:v1", 2, [])["spec"][
        "tfReplicaSpecs"]["Chief"]["template"]["spec"])
    experiment = katib_experiment()
    specs += [r["template"]["spec"] for r in experiment.doc["spec"]["trialTemplate"]["trialSpec"]["spec"][
        "tfReplicaSpecs"].values()]
    assert len(specs) > 12
    limit = quantity(plan.quota_hard()["limits.ephemeral-storage"])
    maximum = max(quantity(c["resources"]["limits"]["ephemeral-storage"]) for s in specs
                  for c in s["containers"] + s.get("initContainers", []))
    lr = next(d for d in attendee_objects("alice") if d["kind"] == "LimitRange")["spec"]["limits"][0]
    assert quantity(lr["max"]["ephemeral-storage"]) >= max(maximum, 5 * GI)  # Katib's collectors: 5Gi
    assert quantity(lr["default"]["ephemeral-storage"]) <= quantity(lr["max"]["ephemeral-storage"])
    for spec in specs:
        empty_dirs = [v for v in spec.get("volumes", []) if "emptyDir" in v]
        for volume in empty_dirs:
            assert quantity(volume["emptyDir"]["sizeLimit"]) <= 1 * GI, volume
        for c in spec["containers"] + spec.get("initContainers", []):
            requests, limits = c["resources"]["requests"], c["resources"]["limits"]
            assert 0 < quantity(requests["ephemeral-storage"]) <= quantity(limits["ephemeral-storage"]) <= limit
            # what the container may write to the node: its emptyDirs fit within its limit, its log beside them
            mounted = {m["name"] for m in c.get("volumeMounts", [])}
            sized = sum(quantity(v["emptyDir"]["sizeLimit"]) for v in empty_dirs if v["name"] in mounted)
            assert sized < quantity(limits["ephemeral-storage"]), c.get("name")


def test_the_create_command_turns_off_service_external_ips_and_the_kubelets_read_only_port():
    command = plan.make_plan(20, plan.MACHINE_TYPE).create_command()
    assert "--no-enable-service-externalips" in command
    assert "--no-enable-insecure-kubelet-readonly-port" in command
