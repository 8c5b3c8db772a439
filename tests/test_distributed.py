"""Distributed training learns: a Chief and a Worker train one model together, as one process would.

kube/tfjob.yaml with one Worker runs through tfjob_local.py, from nothing,
for the same global steps and global batch as one process (main.py, same
seed). With TFK8S_TRACE_DIR set, every replica writes down what it trained
on and the weights it holds (trainer/trace.py). That shows what an accuracy
alone cannot:
- each step, the two replicas trained on disjoint halves of the global batch,
  which together are exactly the batch the one process trained on (not each
  its whole batch, as replicas training alone would; not the same half twice);
- at every evaluation (and checkpoint) the replicas hold identical weights:
  their gradients were all-reduced (replicas training alone drift apart from
  their random initial weights on).
And the two-replica model is within MARGIN of the one process's test accuracy.
"""
import re

import pytest

from support import run_script
from tfk8s.bench.distributed import distributed_manifest
from tfk8s.trainer.trace import ENV, read_examples, read_weights

# Measured (docs/measured.md, "Distributed training learns"), `bench.py distributed --steps 300 --batch_size 100`
# over seeds 0 to 9: one process 97.55 to 98.70% (mean 98.41), Chief + Worker 98.26 to 98.82% (mean 98.51);
# the largest gap between the two runs of one seed was 0.72 points. At 150 steps the gap reached 1.40
# points over 5 seeds, at 100 steps 5.6: too unsettled to compare. MARGIN is about twice the largest gap seen.
STEPS, BATCH, EVAL_EVERY, SEED = 300, 100, 100, 0
MARGIN = 1.5  # percentage points of test accuracy


def accuracy(output):
    return float(re.search(r"test accuracy ([\d.]+)%", output).group(1))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The one-process run and the Chief + Worker TFJob, from nothing, traced; their outputs and trace dirs."""
    root = tmp_path_factory.mktemp("distributed")
    flags = ("--dataset", "mini", "--steps", STEPS, "--batch_size", BATCH, "--seed", SEED,
             "--eval_every", EVAL_EVERY, "--checkpoint_every", EVAL_EVERY)
    single = run_script("main.py", *flags, "--model_dir", root / "single" / "model",
                        "--export_dir", root / "single" / "export", env={ENV: str(root / "single" / "trace")})
    assert single.returncode == 0, single.stdout + single.stderr
    manifest = distributed_manifest(2, root / "job" / "tfjob.yaml")  # kube/tfjob.yaml, Worker replicas: 1
    job = run_script("tfjob_local.py", manifest, "--root", root / "job", "--", *flags,
                     env={ENV: str(root / "job" / "trace")})
    assert job.returncode == 0, job.stdout + job.stderr
    return {"single": single.stdout, "job": job.stdout, "single_trace": root / "single" / "trace",
            "job_trace": root / "job" / "trace"}


@pytest.mark.slow
def test_the_chief_and_the_worker_train_in_sync(runs):
    assert "chief-0: multi_worker training" in runs["job"] and "num_replicas_in_sync=2" in runs["job"]
    assert "num_replicas_in_sync=1" in runs["single"]


@pytest.mark.slow
def test_each_step_the_replicas_share_out_the_batch_one_process_trains_on(runs):
    single = read_examples(runs["single_trace"] / "chief-0.examples")
    chief = read_examples(runs["job_trace"] / "chief-0.examples")
    worker = read_examples(runs["job_trace"] / "worker-0.examples")
    assert sorted(single) == sorted(chief) == sorted(worker) == list(range(STEPS))
    for step in range(STEPS):
        assert len(chief[step]) == len(worker[step]) == BATCH // 2, step  # each its half of the global batch
        assert not set(chief[step]) & set(worker[step]), step  # never the same examples
        assert sorted(chief[step] + worker[step]) == sorted(single[step]), step  # together: one process's batch


@pytest.mark.slow
def test_the_replicas_hold_identical_weights_at_every_checkpoint(runs):
    chief = read_weights(runs["job_trace"] / "chief-0.weights")
    worker = read_weights(runs["job_trace"] / "worker-0.weights")
    assert sorted(chief) == list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY))
    assert chief == worker
    assert len(set(chief.values())) == len(chief)  # and they changed between checkpoints: they trained


@pytest.mark.slow
def test_the_two_replica_model_is_as_accurate_as_the_one_process_model(runs):
    single, job = accuracy(runs["single"]), accuracy(runs["job"])
    assert abs(job - single) <= MARGIN, (single, job)

