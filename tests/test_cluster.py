"""cluster.py: the trainer's role and strategy come from TF_CONFIG alone, as the operator writes it.

The TF_CONFIGs here are the ones training operator v1.9 gives the replicas of
the workshop's own manifests (built by tfjob_local.operator_tf_config); the
real processes that train with them are in test_tfjob_local.py.
"""
import json

import pytest

from support import REPO, assert_one_line_error, run_script
from tfk8s import yamlfile
from tfk8s.cli import UsageError
from tfk8s.kube import tfjob_local
from tfk8s.trainer import cluster


def role_in(manifest, replica_type, index):
    (doc,) = yamlfile.documents(REPO / "kube" / manifest)
    return cluster.read_role({"TF_CONFIG": tfjob_local.operator_tf_config(doc, replica_type, index)})


def test_no_tf_config_is_one_process_that_is_its_own_chief():
    role = cluster.read_role({})
    assert (role.mode, role.name, role.is_chief) == ("single", "chief-0", True)
    assert cluster.make_strategy(role).num_replicas_in_sync == 1


def test_chief_and_workers_are_multi_worker_mirrored_and_only_the_chief_writes():
    chief, worker = role_in("tfjob.yaml", "Chief", 0), role_in("tfjob.yaml", "Worker", 1)
    assert (chief.mode, chief.name, chief.is_chief) == ("multi_worker", "chief-0", True)
    assert (worker.mode, worker.name, worker.is_chief) == ("multi_worker", "worker-1", False)
    assert worker.cluster == {"chief": ["mnist-tfjob-chief-0.default.svc:2222"],
                              "worker": ["mnist-tfjob-worker-0.default.svc:2222",
                                         "mnist-tfjob-worker-1.default.svc:2222"]}


def test_a_ps_entry_means_parameter_server_training_coordinated_by_the_chief():
    roles = [role_in("tfjob-ps.yaml", t, i) for t, i in (("Chief", 0), ("Worker", 0), ("Worker", 1), ("PS", 0))]
    assert {r.mode for r in roles} == {"parameter_server"}
    assert [r.name for r in roles if r.is_chief] == ["chief-0"]


def test_without_a_chief_worker_0_writes_checkpoints_and_exports():
    config = {"cluster": {"worker": ["a:2222", "b:2222"]}, "task": {"type": "worker", "index": 0}}
    assert cluster.read_role({"TF_CONFIG": json.dumps(config)}).is_chief
    config["task"]["index"] = 1
    assert not cluster.read_role({"TF_CONFIG": json.dumps(config)}).is_chief


def test_an_evaluator_in_the_cluster_is_not_a_training_replica():
    # The operator lists an Evaluator replica in every replica's TF_CONFIG (the Evaluator itself is refused).
    (doc,) = yamlfile.documents(REPO / "kube" / "tfjob.yaml")
    doc["spec"]["tfReplicaSpecs"]["Evaluator"] = doc["spec"]["tfReplicaSpecs"]["Worker"]
    chief = cluster.read_role({"TF_CONFIG": tfjob_local.operator_tf_config(doc, "Chief", 0)})
    assert (chief.mode, chief.is_chief) == ("multi_worker", True)
    assert sorted(chief.cluster) == ["chief", "evaluator", "worker"]
    del doc["spec"]["tfReplicaSpecs"]["Worker"]
    alone = cluster.read_role({"TF_CONFIG": tfjob_local.operator_tf_config(doc, "Chief", 0)})
    assert (alone.mode, alone.is_chief) == ("single", True)
    with pytest.raises(UsageError, match="an Evaluator replica is not supported"):
        cluster.read_role({"TF_CONFIG": tfjob_local.operator_tf_config(doc, "Evaluator", 0)})


def test_a_single_replica_tfjob_gets_no_tf_config_and_trains_alone():
    (doc,) = yamlfile.documents(REPO / "kube" / "tfjob.yaml")
    del doc["spec"]["tfReplicaSpecs"]["Worker"]
    assert tfjob_local.operator_tf_config(doc, "Chief", 0) is None


@pytest.mark.parametrize("tf_config, message", [
    ("{not json", "TF_CONFIG is not valid JSON"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}', "task worker-3 does not fit"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}', "task chief-0 does not fit"),
    ('{"cluster": {"learner": ["a:1"]}, "task": {"type": "learner", "index": 0}}', "does not fit its cluster"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "evaluator", "index": 0}}', "Evaluator replica is not"),
    # The operator accepts a Master replica and names the task `master`; TensorFlow 2 refuses it.
    ('{"cluster": {"master": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}}',
     "TF_CONFIG has a master task, which TensorFlow 2 does not know"),
    ('{"cluster": ["a:1"], "task": {}}', "TF_CONFIG is not valid JSON"),
])
def test_malformed_tf_config_is_a_usage_error(tf_config, message):
    with pytest.raises(UsageError, match=message):
        cluster.read_role({"TF_CONFIG": tf_config})


def test_trainer_with_malformed_tf_config_exits_2_with_one_line():
    result = run_script("main.py", "--steps", 1, env={"TF_CONFIG": '{"cluster": {"worker": ["a:1"]}, "task": 3}'})
    assert result.returncode == 2
    assert_one_line_error(result, "TF_CONFIG")
