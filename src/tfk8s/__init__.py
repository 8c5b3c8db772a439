"""Distributed TensorFlow on Kubernetes: the workshop's library.

The commands in src/ (main.py, serve.py, client.py, ...) are thin: each parses
its flags and calls a module here.

- trainer/: the model, its data pipeline, the training loop, TF_CONFIG, the export
- serving/: the local model server, the client, image preparation, model config, batch scoring
- kube/: TFJob checks, the local TFJob runner, manifest rendering
- sweep/: the hyperparameter sweep and its results
- instructor/: namespaces, quotas and kubeconfigs for a workshop's attendees
- bench/: the benchmarks behind the figures in docs/
"""
import os

# Before TensorFlow is first imported, by any module of this package: tf.keras is tf-keras
# (Keras 3 cannot train under every tf.distribute strategy), and TensorFlow's C++ notices stay quiet.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
