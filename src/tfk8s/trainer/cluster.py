"""Where this process stands in the cluster, read from TF_CONFIG alone.

The Kubeflow training operator injects TF_CONFIG into every replica of a
TFJob; the trainer's command line is the same everywhere. No TF_CONFIG (a
laptop, a plain Job): one process. Chief and workers: every process is a
replica of MultiWorkerMirroredStrategy. A `ps` entry: ParameterServerStrategy,
where the chief coordinates and workers and parameter servers only serve.
"""
import json
import os
import sys
from dataclasses import dataclass

from tfk8s.cli import UsageError

KNOWN_TYPES = ("chief", "worker", "ps", "evaluator")


@dataclass
class Role:
    cluster: dict
    task_type: str = "chief"
    task_index: int = 0

    @property
    def mode(self):
        """'single', 'multi_worker' or 'parameter_server'."""
        if "ps" in self.cluster:
            return "parameter_server"
        # The operator lists an Evaluator in every replica's cluster; TensorFlow leaves it out of the training.
        if sum(len(hosts) for job, hosts in self.cluster.items() if job != "evaluator") > 1:
            return "multi_worker"
        return "single"

    @property
    def is_chief(self):
        """The chief (or worker 0 when there is none) writes summaries, checkpoints and exports."""
        if self.task_type == "chief":
            return True
        return self.task_type == "worker" and self.task_index == 0 and "chief" not in self.cluster

    @property
    def name(self):
        return f"{self.task_type}-{self.task_index}"


def read_role(environ=os.environ):
    """Parse TF_CONFIG; a malformed one is a usage error, not a traceback."""
    raw = environ.get("TF_CONFIG", "").strip()
    if not raw:
        return Role(cluster={})
    try:
        config = json.loads(raw)
        cluster = {k: list(v) for k, v in config.get("cluster", {}).items()}
        task = config.get("task", {})
        role = Role(cluster=cluster, task_type=str(task.get("type", "")), task_index=int(task.get("index", 0)))
    except (ValueError, TypeError, AttributeError) as err:
        raise UsageError(f"TF_CONFIG is not valid JSON of the form {{cluster, task}}: {err}") from None
    if role.task_type == "evaluator":
        raise UsageError("an Evaluator replica is not supported: the chief evaluates as it trains")
    if "master" in cluster:  # the operator accepts a Master replica; TensorFlow 2's strategies refuse the task type
        raise UsageError("TF_CONFIG has a master task, which TensorFlow 2 does not know (chief, worker, ps and "
                         "evaluator): name the replica type Chief in the TFJob")
    unknown = set(cluster) - set(KNOWN_TYPES)
    if unknown or role.task_type not in cluster or not 0 <= role.task_index < len(cluster[role.task_type]):
        raise UsageError(f"TF_CONFIG task {role.name} does not fit its cluster {sorted(cluster)}")
    return role


def make_strategy(role):
    """Return the tf.distribute strategy for `role`.

    On parameter servers and on the workers of a parameter-server job this
    starts a TensorFlow server and never returns: the chief drives them.
    """
    import tensorflow as tf  # here: reading the role (main.py does it first) answers before TensorFlow loads
    if role.mode == "single":
        return tf.distribute.get_strategy()
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if role.mode == "multi_worker":
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING)
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver, communication_options=options)
    if role.task_type in ("worker", "ps"):
        print(f"{role.name}: serving the parameter-server cluster; the chief drives training", flush=True)
        server = tf.distribute.Server(
            resolver.cluster_spec(), job_name=role.task_type, task_index=role.task_index,
            protocol=resolver.rpc_layer or "grpc", start=True)
        server.join()
        sys.exit(0)
    return tf.distribute.ParameterServerStrategy(resolver)


def wait_for_every_replica(strategy, role):
    """Under MultiWorkerMirroredStrategy, hold every replica until the chief has exported.

    A last all-reduce that all replicas join: workers that exited while the
    chief still evaluates and exports would look crashed to the chief's
    coordination service, which would then wait for their heartbeats to time
    out before letting it exit. Once the chief has exported, a peer lost here
    no longer matters to it.
    """
    if role.mode != "multi_worker":
        return
    import tensorflow as tf

    def one():
        return tf.constant(1)

    @tf.function
    def barrier():
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(one), axis=None)

    try:
        barrier()
    except tf.errors.OpError:
        if not role.is_chief:
            raise
