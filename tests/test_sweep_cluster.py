"""The sweep on a cluster (templated/run.sh against the stand-in API server of tests/fake_api.py): trials submitted
within the parallelism, a second run that trains again, a refusal that names what to stop when the quota cannot hold
the trials, and only requests the attendee's Role allows."""
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from support import SWEEP_IMAGE as IMAGE
from support import TINY_VALUES as TINY
from support import (
    assert_one_line_error,
    container,
    flag,
    make,
    make_error,
    real_kubectl,
    run_sweep,
    sweep_push,
    wait_for,
    workshop_namespace,
    write_values,
)
from tfk8s.instructor import namespaces
from tfk8s.kube import resources
from tfk8s.sweep import cluster, trials

# ---------------------------------------------------------------- the cluster, through kubectl

def created(api):
    return api.read()["objects"]["tfjobs"]


def test_parallel_submission_keeps_at_most_n_trials_running_and_waits_for_all(api):
    """A namespace without a quota (a cluster of one's own): three trials at once."""
    result = run_sweep("--parallel", 3, "--poll", 0.05, "--namespace", "alice", env={**api.env, "FAKE_POLLS": "2"})
    assert result.returncode == 0, result.stderr
    assert sorted(j["metadata"]["name"] for j in created(api)) == [f"mnist-sweep-t{i:02d}" for i in range(1, 10)]
    running, most = 0, 0
    events = api.read()["events"]
    for event, _ in events:
        running += 1 if event == "created" else -1
        most = max(most, running)
    assert most == 3 and running == 0  # never more than --parallel, as many as allowed, and all finished
    assert [e for e, _ in events[:4]] == ["created"] * 3 + ["finished"]  # the 4th waits for a finish
    polls = [c for c in api.calls("get") if c[1] == "tfjob"]
    assert polls and all(c[3:] == ["-n", "alice", "-o", f"jsonpath={cluster.JSONPATH}"] for c in polls)
    assert "9 of 9 done" in result.stdout


def test_a_failed_trial_fails_the_sweep_after_every_trial_ran(api):
    workshop_namespace(api)
    result = run_sweep("--parallel", 2, "--poll", 0.05, "--namespace", "alice",
                       env={**api.env, "FAKE_FAIL": "mnist-sweep-t04"})
    assert_one_line_error(result, "1 of 9 trials did not succeed: mnist-sweep-t04")
    assert len(created(api)) == 9


def make_sweep(api, *extra, env=None):
    """`make sweep` against the stand-in, which answers at once: polled every 50 ms, not every 15 s."""
    return make("sweep", "NAMESPACE=alice", f"IMAGE={IMAGE.split(':')[0]}", "TAG=v7", sweep_push(api),
                "SWEEP_PARALLEL=2", *extra,
                env={**api.env, "SWEEP_POLL": "0.05", **(env or {})}, path=api.path)


def test_a_second_make_sweep_deletes_the_finished_trials_and_trains_every_trial_again(api):
    workshop_namespace(api, "tensorboard.yaml", "serving.yaml")
    first = make_sweep(api)
    assert first.returncode == 0, first.stdout + first.stderr
    first_jobs = {j["metadata"]["name"]: j for j in created(api)}
    (first_run,) = {j["metadata"]["labels"]["run"] for j in first_jobs.values()}
    marker = len(api.calls())
    # Run ids have a resolution of one second: the next make sweep starts in another second than the first's.
    wait_for(lambda: trials.new_run_id() != first_run, "a run id other than the first's", timeout=5)

    second = make_sweep(api)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "deleted the 9 finished trial(s)" in second.stdout and "9 of 9 done" in second.stdout
    calls = api.calls()[marker:]
    changes = [c for c in calls if c[0] in ("create", "delete", "apply", "patch")]
    # Look first (the sweep's TFJobs, the quota), then delete the finished trials, then create each anew.
    assert changes[0] == ["delete", "tfjobs", "-n", "alice", "-l", "sweep=mnist-sweep", "--wait=true"]
    assert [c[0] for c in changes[1:]] == ["create"] * 9
    looked = [c[:2] for c in calls[:calls.index(changes[0])]]
    assert ["get", "tfjobs"] in looked and ["get", "resourcequotas"] in looked
    second_jobs = {j["metadata"]["name"]: j for j in created(api)}
    assert sorted(second_jobs) == sorted(first_jobs)
    (second_run,) = {j["metadata"]["labels"]["run"] for j in second_jobs.values()}
    assert second_run != first_run
    for name, job in second_jobs.items():
        labels, args = job["metadata"]["labels"], container(job)["args"]
        # The labels describe what ran: the trainer's flags, and a model_dir of this run (nothing to resume).
        assert flag(args, "learning_rate") == labels["learning_rate"]
        assert flag(args, "hidden_layers") == labels["hidden_layers"]
        assert flag(args, "model_dir") == f"/mnt/nfs/runs/mnist-sweep/{second_run}/{labels['trial']}"
        assert flag(container(first_jobs[name])["args"], "model_dir").split("/")[5] == first_run


def test_a_sweep_still_running_is_not_touched_and_the_refusal_names_its_trials(api):
    workshop_namespace(api)
    first = run_sweep("--namespace", "alice", "--values", write_values(Path(api.env["FAKE_API_STATE"]).parent, TINY),
                      env=api.env)
    assert first.returncode == 0, first.stderr  # all at once: submitted, nobody polls, they run on
    before = len(api.calls())
    result = make_sweep(api, "SWEEP_VALUES=" + str(Path(api.env["FAKE_API_STATE"]).parent / "values.yaml"))
    assert result.returncode != 0
    line = make_error(result, "sweep tiny still has trials running in namespace alice: tiny-t01, tiny-t02")
    assert "templated/run.sh --delete" in line
    assert not [c for c in api.calls()[before:] if c[0] in ("create", "delete", "apply")]


def test_when_the_quota_cannot_hold_the_trials_the_refusal_names_what_to_stop_and_nothing_is_created(api):
    workshop_namespace(api, "tensorboard.yaml", "serving.yaml", "tfjob-ps.yaml")
    result = make_sweep(api)
    line = make_error(result, "2 trials need requests.cpu 6", "but the quota workshop has requests.cpu 3.65",
                      "stop TFJob mnist-tfjob-ps first (kubectl delete tfjob mnist-tfjob-ps)", "--parallel 1")
    assert "nfs-server" not in line  # the shared volume is never what to stop
    assert not [c for c in api.calls() if c[0] in ("create", "delete", "apply", "patch")]
    assert created(api) == []

    # The quota holds each step of the workshop, not two at once: with the PS TFJob running, not even one
    # trial fits (memory). Once it is stopped, as the line says, the sweep runs.
    one = make_sweep(api, "SWEEP_PARALLEL=1")
    make_error(one, "a trial needs", "requests.memory", "stop TFJob mnist-tfjob-ps first")
    state = api.read()
    state["objects"]["pods"] = [p for p in state["objects"]["pods"]
                                if p["metadata"]["labels"].get("training.kubeflow.org/job-name") != "mnist-tfjob-ps"]
    api.write(state)
    after = make_sweep(api)
    assert after.returncode == 0, after.stdout + after.stderr
    assert len(created(api)) == 9


def test_the_attendee_role_allows_every_request_the_sweep_makes(api):
    workshop_namespace(api, "tensorboard.yaml", "serving.yaml", "tfjob-ps.yaml")
    assert make_sweep(api).returncode != 0            # a refusal: reads the quota and the pods
    state = api.read()
    state["objects"]["pods"] = []
    api.write(state)
    assert make_sweep(api).returncode == 0            # a run: creates and polls
    assert make_sweep(api).returncode == 0            # a re-run: deletes the earlier run
    assert run_sweep("--delete", "--namespace", "alice", env=api.env).returncode == 0
    role = next(d for d in yaml.safe_load_all(namespaces.render_namespace("alice")) if d["kind"] == "Role")
    requests = {tuple(r) for r in api.read()["requests"]}
    assert {("create", "kubeflow.org", "tfjobs"), ("list", "", "pods"), ("get", "kubeflow.org", "tfjobs"),
            ("list", "", "resourcequotas"), ("delete", "kubeflow.org", "tfjobs")} <= requests
    for verb, group, resource in requests:
        assert any(group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
                   for rule in role["rules"]), f"the attendee Role does not allow {verb} {resource}"


def test_delete_uses_the_sweep_label(api):
    result = run_sweep("--delete", "--name", "lr-study", "--namespace", "alice", env=api.env)
    assert result.returncode == 0, result.stderr
    assert api.calls()[-1] == ["delete", "tfjobs", "-n", "alice", "-l", "sweep=lr-study"]


def test_no_kubectl_is_one_line_pointing_to_dry_run_and_local(tmp_path):
    bin_dir = tmp_path / "bin"  # bash and dirname, which run.sh needs, and no kubectl
    bin_dir.mkdir()
    for tool in ("bash", "dirname"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    result = run_sweep(env={"PATH": str(bin_dir)})
    assert_one_line_error(result, "kubectl is not on PATH", "--dry_run", "--local")


def test_status_jsonpath_yields_the_true_conditions_with_real_kubectl(tmp_path):
    """kubectl evaluates the poll's JSONPath (offline, with --local) as it would on a TFJob from the API server."""
    job = {"apiVersion": "kubeflow.org/v1", "kind": "TFJob", "metadata": {"name": "t"},
           "status": {"conditions": [{"type": "Created", "status": "True"}, {"type": "Running", "status": "False"},
                                     {"type": "Succeeded", "status": "True"}]}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    result = subprocess.run([real_kubectl(), "label", "--local", "-f", path, "probe=1", "-o",
                             f"jsonpath={cluster.JSONPATH}"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["Created", "Succeeded"]


def test_quantities_are_read_as_the_api_server_reads_them():
    assert [resources.quantity(q) for q in ("500m", "2", "4Gi", "1.5", "1e3", "128Mi", "100M", 20)] == \
        [0.5, 2, 4 * 2**30, 1.5, 1000, 128 * 2**20, 10**8, 20]
    with pytest.raises(ValueError, match="is not a Kubernetes quantity"):
        resources.quantity("4 GB")
