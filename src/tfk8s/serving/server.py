"""A development model server that speaks TensorFlow Serving's gRPC and REST APIs.

On the cluster the model is served by TensorFlow Serving itself
(kube/serving.yaml). Without a cluster or Docker, this serves the same export
directory with the same flags and the same API, so the same client works:

    python src/serve.py --model_name mnist --model_base_path runs/local/export --port 8500 --rest_api_port 8501

It loads the highest integer version under --model_base_path, polls for newer
ones every --file_system_poll_wait_seconds and swaps them in without a
restart (the old version answers until the new one is loaded). Or, as
tensorflow_model_server, it serves what a model config file says (models,
version policies, the labels `stable` and `canary` of an A/B rollout) and
reads the file again every --model_config_file_poll_wait_seconds:

    python src/serve.py --model_config_file models.config --model_config_file_poll_wait_seconds 2 --rest_api_port 8501

Mistakes get the status codes TensorFlow Serving gives them. It is a
development server: one process, no TLS, no authentication, loopback only
unless --bind_address says otherwise. Use tensorflow/serving in production.

Speed: each version's signatures are loaded once and called as concrete
functions (no retracing for any batch size), and concurrent requests for the
same signature are merged into one call (--enable_batching, on by default):
the model computes a batch of 16 images in about three times the time of one.
"""
import argparse
import collections
import contextlib
import functools
import http.server
import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import status_pb2

from tfk8s import versions
from tfk8s.cli import ArgumentParser, UsageError, UserError, child_env, entry_point
from tfk8s.paths import SRC
from tfk8s.serving import model_config
from tfk8s.serving.tensors import DTYPES, GRPC_OPTIONS, apis, dtype_name, to_ndarray, to_tensor_proto

DEFAULT_SIGNATURE = "serving_default"
MAX_LOAD_RETRIES = 5   # as tensorflow_model_server's --max_num_load_retries
State = apis.get_model_status_pb2.ModelVersionStatus.State
Code = grpc.StatusCode
# How TensorFlow Serving's REST API turns a status code into an HTTP status (http_server.cc).
HTTP_STATUS = {Code.INVALID_ARGUMENT: 400, Code.FAILED_PRECONDITION: 400, Code.OUT_OF_RANGE: 400,
               Code.NOT_FOUND: 404, Code.UNIMPLEMENTED: 501, Code.UNAVAILABLE: 503,
               Code.DEADLINE_EXCEEDED: 504, Code.RESOURCE_EXHAUSTED: 429}
# tensorflow.error.Code numbers for StatusProto.error_code
ERROR_CODE = {code: code.value[0] for code in Code}


class ServingError(Exception):
    """A request the server refuses: a gRPC status code and TensorFlow Serving's message for it."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


def log(message):
    print(message, flush=True)


# ---------------------------------------------------------------- running a signature

class Batcher:
    """Merge requests that arrive while the model is busy into one call.

    No timer and no extra thread: the first caller runs a batch of whatever
    is queued (itself first), then hands the lead to the oldest waiting
    caller. Under load, batches grow by themselves; an idle server answers
    a lone request at once.
    """

    class _Item:
        def __init__(self, inputs, rows):
            self.inputs, self.rows = inputs, rows
            self.ready, self.outputs, self.error = threading.Event(), None, None

    def __init__(self, call, max_batch_size):
        self.call, self.max_batch_size = call, max_batch_size
        self.lock, self.queue, self.busy = threading.Lock(), collections.deque(), False

    def __call__(self, inputs, rows):
        item = self._Item(inputs, rows)
        with self.lock:
            self.queue.append(item)
            lead, self.busy = not self.busy, True
        if not lead:
            item.ready.wait()
        if item.outputs is None and item.error is None:  # we lead: our item is first in the queue
            self._run_one_batch()
        if item.error is not None:
            raise item.error
        return item.outputs

    def _run_one_batch(self):
        with self.lock:
            batch, rows = [], 0
            while self.queue and (not batch or rows + self.queue[0].rows <= self.max_batch_size):
                rows += self.queue[0].rows
                batch.append(self.queue.popleft())
        try:
            merged = {k: np.concatenate([i.inputs[k] for i in batch]) if len(batch) > 1 else batch[0].inputs[k]
                      for k in batch[0].inputs}
            outputs, start = self.call(merged), 0
            for item in batch:
                item.outputs = {k: v[start:start + item.rows] for k, v in outputs.items()}
                start += item.rows
        except Exception as err:  # noqa: BLE001 - every caller in the batch gets the error, whatever it is
            for item in batch:
                item.error = err
        for item in batch[1:]:
            item.ready.set()
        with self.lock:
            if self.queue:
                self.queue[0].ready.set()  # the oldest waiting caller leads the next batch
            else:
                self.busy = False


class Signature:
    """One signature of a loaded version: its SignatureDef and its concrete function, called as is."""

    def __init__(self, name, definition, function, max_batch_size, batching):
        self.name, self.definition, self.function = name, definition, function
        self.max_batch_size = max_batch_size
        self.inputs = dict(definition.inputs.items())
        self.outputs = sorted(definition.outputs)
        batched = all(info.tensor_shape.dim and info.tensor_shape.dim[0].size == -1 for info in self.inputs.values())
        self.batcher = Batcher(self._call, max_batch_size) if batching and batched else None

    def _call(self, inputs):
        outputs = self.function(**{alias: tf.constant(value) for alias, value in inputs.items()})
        return {alias: tensor.numpy() for alias, tensor in outputs.items()}

    def check(self, inputs):
        """TensorFlow Serving's checks on a request's inputs; returns the batch size."""
        if set(inputs) != set(self.inputs):
            extra, missing = sorted(set(inputs) - set(self.inputs)), sorted(set(self.inputs) - set(inputs))
            if extra:
                raise ServingError(Code.INVALID_ARGUMENT, f"input tensor alias not found in signature: {extra[0]}. "
                                   f"Inputs expected to be in the set {{{','.join(sorted(self.inputs))}}}.")
            raise ServingError(Code.INVALID_ARGUMENT, f"input size does not match signature: missing {missing}")
        sizes = set()
        for alias, value in inputs.items():
            info = self.inputs[alias]
            expected = DTYPES[info.dtype][0] if info.dtype in DTYPES else None
            if value.dtype != expected:
                raise ServingError(Code.INVALID_ARGUMENT, f"Expects input {alias!r} to be {dtype_name(info.dtype)} "
                                   f"but {np.dtype(value.dtype).name} is provided")
            dims = [d.size for d in info.tensor_shape.dim]
            if not info.tensor_shape.unknown_rank and (
                    len(dims) != value.ndim or any(d not in (-1, s) for d, s in zip(dims, value.shape))):
                raise ServingError(Code.INVALID_ARGUMENT, f"input {alias!r} has shape {list(value.shape)} but the "
                                   f"signature expects {dims} (-1: any size)")
            sizes.add(value.shape[0] if value.ndim else 1)
        if len(sizes) > 1:
            raise ServingError(Code.INVALID_ARGUMENT, f"inputs disagree on the batch size: {sorted(sizes)}")
        rows = sizes.pop() if sizes else 1
        if rows > self.max_batch_size:
            raise ServingError(Code.INVALID_ARGUMENT, f"Task size {rows} is larger than maximum input batch size "
                               f"{self.max_batch_size} (--max_batch_size)")
        return rows

    def run(self, inputs, output_filter=()):
        """inputs: {alias: ndarray} -> {alias: ndarray}, only the outputs asked for (all if none)."""
        for alias in output_filter:
            if alias not in self.outputs:
                raise ServingError(Code.INVALID_ARGUMENT, f"output tensor alias not found in signature: {alias} "
                                   f"Outputs expected to be in the set {{{','.join(self.outputs)}}}.")
        rows = self.check(inputs)
        try:
            outputs = self.batcher(inputs, rows) if self.batcher else self._call(inputs)
        except tf.errors.InvalidArgumentError as err:
            raise ServingError(Code.INVALID_ARGUMENT, err.message) from None
        except tf.errors.OpError as err:
            raise ServingError(Code.INTERNAL, err.message) from None
        return {alias: outputs[alias] for alias in (output_filter or self.outputs)}


class LoadedVersion:
    """One version directory, loaded: its SignatureDefs (for metadata) and their functions (for Predict)."""

    def __init__(self, version, path, max_batch_size, batching):
        self.version, self.path = version, Path(path)
        saved_model = saved_model_pb2.SavedModel()
        saved_model.ParseFromString((self.path / "saved_model.pb").read_bytes())
        self.signature_defs = apis.get_model_metadata_pb2.SignatureDefMap()
        for name, definition in saved_model.meta_graphs[0].signature_def.items():
            self.signature_defs.signature_def[name].CopyFrom(definition)
        loaded = tf.saved_model.load(str(self.path))
        self._keep_alive = loaded  # the functions' variables live as long as this object
        self.signatures = {name: Signature(name, self.signature_defs.signature_def[name], function,
                                           max_batch_size, batching)
                           for name, function in loaded.signatures.items()}
        for signature in self.signatures.values():  # warm up: the first call optimises the graph
            zeros = {alias: np.zeros([1 if d.size == -1 else d.size for d in info.tensor_shape.dim],
                                     DTYPES[info.dtype][0]) for alias, info in signature.inputs.items()}
            signature.run(zeros)

    def signature(self, name):
        """The signature a Predict names (none: serving_default); TensorFlow Serving's code when it is missing."""
        name = name or DEFAULT_SIGNATURE
        if name not in self.signatures:
            raise ServingError(Code.FAILED_PRECONDITION, f'Serving signature key "{name}" not found.')
        return self.signatures[name]


# ---------------------------------------------------------------- which versions are served

class ServedModel:
    """The versions of one model: which are on disk, which are loaded, what state each is in.

    Version policy, as TensorFlow Serving's model_version_policy: `latest`
    (N newest, default 1), `all`, or `specific` versions. A newer version is
    loaded beside the old one, which is unloaded only once the new one
    answers. `labels` maps a version label to a number; a model config file
    sets them (set_labels), the single-model flags leave them empty.
    """

    def __init__(self, name, base_path, max_batch_size, batching, policy=("latest", 1)):
        self.name, self.base_path = name, Path(base_path)
        self.max_batch_size, self.batching = max_batch_size, batching
        self.policy = policy
        self.labels = {}
        self.lock = threading.Lock()
        self.loaded = {}     # version -> LoadedVersion
        self.states = {}     # version -> (State, error message or "")
        self.failures = {}   # version -> failed load attempts

    def versions_on_disk(self):
        return versions.versions(self.base_path)

    def aspired_versions(self, on_disk):
        """The versions the policy asks for, among those on disk."""
        kind, value = self.policy
        if kind == "all":
            return on_disk
        if kind == "specific":
            return [v for v in on_disk if v in value]
        return on_disk[-value:]

    def set_labels(self, labels):
        """Point labels at versions (ModelConfigFile checks first that each one is loaded)."""
        with self.lock:
            changed = self.labels != labels
            self.labels = dict(labels)
        if changed:
            log(f"labels of {self.name}: " + (", ".join(f"{k} -> {v}" for k, v in sorted(labels.items())) or "none"))

    def poll(self):
        """Load the aspired versions not loaded yet, then unload the others.

        Availability first: while the newest version fails to load (a
        half-copied directory, a corrupt file), the version already loaded
        keeps answering, as long as its directory is still there.
        """
        on_disk = self.versions_on_disk()
        aspired = self.aspired_versions(on_disk)
        for version in aspired:
            if version not in self.loaded and self.failures.get(version, 0) < MAX_LOAD_RETRIES:
                self._load(version)
        serving = [v for v in aspired if v in self.loaded] or [v for v in sorted(self.loaded) if v in on_disk][-1:]
        for version in sorted(set(self.loaded) - set(serving)):
            with self.lock:
                del self.loaded[version]  # requests still running on it finish: they hold a reference
                self.states[version] = (State.END, "")
            log(f"unloaded {self.name} version {version}")

    def _load(self, version):
        with self.lock:
            self.states[version] = (State.LOADING, "")
        began = time.time()
        try:
            loaded = LoadedVersion(version, self.base_path / str(version), self.max_batch_size, self.batching)
        except Exception as err:  # noqa: BLE001 - whatever is wrong with the files, the server stays up
            self.failures[version] = self.failures.get(version, 0) + 1
            reason = " ".join(str(err).split())[:300]
            given_up = self.failures[version] >= MAX_LOAD_RETRIES
            with self.lock:
                self.states[version] = (State.END if given_up else State.LOADING, reason)
            log(f"failed to load {self.name} version {version} (attempt {self.failures[version]} of "
                f"{MAX_LOAD_RETRIES}{', giving up' if given_up else ''}): {reason}")
            return
        with self.lock:
            self.loaded[version] = loaded
            self.states[version] = (State.AVAILABLE, "")
        log(f"loaded {self.name} version {version} from {loaded.path} in {time.time() - began:.1f} s "
            f"(signatures: {', '.join(sorted(loaded.signatures))})")

    def given_up(self):
        """True when there are versions on disk and every aspired one failed to load for good."""
        aspired = self.aspired_versions(self.versions_on_disk())
        return bool(aspired) and all(self.failures.get(v, 0) >= MAX_LOAD_RETRIES for v in aspired)

    def _labelled(self, version, label):
        if not label:
            return version
        if label not in self.labels:
            raise ServingError(Code.INVALID_ARGUMENT, f"Unrecognized servable version label: {label}")
        return self.labels[label]

    def resolve(self, version=None, label=None):
        """The LoadedVersion a request names: a number, a label, or (neither) the newest."""
        with self.lock:
            version = self._labelled(version, label)
            if version is None:
                if not self.loaded:
                    raise ServingError(Code.NOT_FOUND, f"Servable not found for request: Latest({self.name})")
                return self.loaded[max(self.loaded)]
            if version not in self.loaded:
                raise ServingError(Code.NOT_FOUND, f"Servable not found for request: Specific({self.name}, {version})")
            return self.loaded[version]

    def status(self, version=None, label=None):
        """[(version, State, error)] newest first, as GetModelStatus reports it."""
        with self.lock:
            version = self._labelled(version, label)
            if version is not None:
                if version not in self.states:
                    raise ServingError(Code.NOT_FOUND, f"Could not find version {version} of model {self.name}")
                return [(version, *self.states[version])]
            if not self.states:
                raise ServingError(Code.NOT_FOUND, f"Could not find any versions of model {self.name}")
            return [(v, *self.states[v]) for v in sorted(self.states, reverse=True)]


class ModelServer:
    """The models by name, and the three questions every API asks of them."""

    def __init__(self, models=()):
        self.models = {model.name: model for model in models}

    def model(self, name, missing_message):
        if not name:
            raise ServingError(Code.INVALID_ARGUMENT, "ModelSpec has no name specified.")
        if name not in self.models:
            raise ServingError(Code.NOT_FOUND, missing_message)
        return self.models[name]

    def resolve(self, name, version=None, label=None):
        return self.model(name, f"Servable not found for request: Latest({name})").resolve(version, label)

    def status(self, name, version=None, label=None):
        return self.model(name, f"Could not find any versions of model {name}").status(version, label)

    def poll(self):
        for model in self.models.values():
            model.poll()


class ModelConfigFile:
    """--model_config_file: the models to serve, their version policies and labels, read again while serving.

    The file is TensorFlow Serving's text protobuf (src/model_config.py reads
    and checks it with TensorFlow Serving's own message). Read again every
    --model_config_file_poll_wait_seconds, as tensorflow_model_server does: a
    change of policy loads and unloads versions, a change of labels moves
    them, without a restart. A file that does not parse, or that points a
    label at a version not loaded, is refused as a whole and the config in
    force stays; it is tried again at the next poll.
    """

    def __init__(self, path, server, max_batch_size, batching):
        self.path, self.server = Path(path), server
        self.max_batch_size, self.batching = max_batch_size, batching
        self.text = None       # the file's text last applied
        self.labels = {}       # model name -> the labels the file asks for
        self.last_error = None

    def _refuse(self, message):
        if message != self.last_error:
            log(f"{message}; still serving the previous config")
        self.last_error = message

    def reload(self, first=False):
        """Read the file; apply what changed. At start-up (`first`) a bad file is a UserError, later a log line."""
        try:
            text = self.path.read_text()
        except OSError as err:
            if first:
                raise UsageError(f"cannot read --model_config_file {self.path}: {err.strerror}") from None
            return self._refuse(f"cannot read {self.path}: {err.strerror}")
        if text == self.text:
            if any(self.server.models[name].labels != labels for name, labels in self.labels.items()):
                self.set_labels()  # refused last time: the versions may be loaded by now
            return
        try:
            config = model_config.parse(text, str(self.path))
        except model_config.ConfigError as err:
            if first:
                raise
            return self._refuse(str(err))
        models = {}
        for m in config.model_config_list.config:
            old = self.server.models.get(m.name)
            if old is not None and old.base_path == Path(m.base_path):
                old.policy = model_config.version_policy(m)
                models[m.name] = old
            else:
                models[m.name] = ServedModel(m.name, m.base_path, self.max_batch_size, self.batching,
                                             model_config.version_policy(m))
        gone = sorted(set(self.server.models) - set(models))
        self.server.models = models  # one assignment: a request sees the old dict or the new one
        log(f"{'read' if first else 'read again'} {self.path}: " + "; ".join(
            model_config.describe(m) for m in config.model_config_list.config)
            + (f"; no longer serving {', '.join(gone)}" if gone else ""))
        self.text, self.last_error = text, None
        self.labels = {m.name: dict(m.version_labels) for m in config.model_config_list.config}
        if not first:  # at start-up main() waits for the first versions, then sets the labels
            self.server.poll()
            self.set_labels()

    def set_labels(self, strict=False):
        """Put the file's labels in force, every model's or none (strict: a UserError instead of a log line)."""
        try:
            for name, labels in self.labels.items():
                model = self.server.models[name]
                with model.lock:
                    for _label, version in sorted(labels.items()):
                        if version not in model.loaded:
                            raise ServingError(Code.FAILED_PRECONDITION,
                                               f"Request to assign label to version {version} of model {name}, "
                                               "which is not currently available for inference")
        except ServingError as err:
            if strict:
                raise UserError(f"{self.path}: {err.message}") from None
            return self._refuse(f"{self.path}: {err.message}")
        for name, labels in self.labels.items():
            self.server.models[name].set_labels(labels)
        self.last_error = None


# ---------------------------------------------------------------- gRPC: TensorFlow Serving's services

def _spec(model_spec):
    version = model_spec.version.value if model_spec.HasField("version") else None
    return model_spec.name, version, model_spec.version_label or None


def _grpc_method(method):
    """Turn a ServingError into its status code; any other exception into INTERNAL. The server stays up."""

    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except ServingError as err:
            context.abort(err.code, err.message)
        except Exception as err:  # noqa: BLE001 - a bug must not take the server down
            traceback.print_exc()
            context.abort(Code.INTERNAL, f"{type(err).__name__}: {err}")

    return wrapper


class PredictionService(apis.prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata; Classify, Regress and MultiInference stay UNIMPLEMENTED."""

    def __init__(self, server):
        self.server = server

    @_grpc_method
    def Predict(self, request, context):
        name, version, label = _spec(request.model_spec)
        loaded = self.server.resolve(name, version, label)
        signature = loaded.signature(request.model_spec.signature_name)
        inputs = {}
        for alias, proto in request.inputs.items():
            try:
                inputs[alias] = to_ndarray(proto)
            except ValueError as err:
                raise ServingError(Code.INVALID_ARGUMENT, f"tensor parsing error: {alias} ({err})") from None
        outputs = signature.run(inputs, list(request.output_filter))
        response = apis.predict_pb2.PredictResponse()
        response.model_spec.name, response.model_spec.signature_name = name, signature.name
        response.model_spec.version.value = loaded.version
        for alias, value in outputs.items():
            response.outputs[alias].CopyFrom(to_tensor_proto(value))
        return response

    @_grpc_method
    def GetModelMetadata(self, request, context):
        if not request.metadata_field:
            raise ServingError(Code.INVALID_ARGUMENT,
                               "GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise ServingError(Code.INVALID_ARGUMENT, f"Metadata field {field} is not supported")
        name, version, label = _spec(request.model_spec)
        loaded = self.server.resolve(name, version, label)
        response = apis.get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = name
        response.model_spec.version.value = loaded.version
        response.metadata["signature_def"].Pack(loaded.signature_defs)
        return response


class ModelService(apis.model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus; HandleReloadConfigRequest stays UNIMPLEMENTED."""

    def __init__(self, server):
        self.server = server

    @_grpc_method
    def GetModelStatus(self, request, context):
        response = apis.get_model_status_pb2.GetModelStatusResponse()
        for version, state, error in self.server.status(*_spec(request.model_spec)):
            response.model_version_status.add(
                version=version, state=state,
                status=status_pb2.StatusProto(error_code=ERROR_CODE[Code.UNKNOWN if error else Code.OK],
                                              error_message=error))
        return response


def start_grpc(server, address, port, max_threads):
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_threads), options=GRPC_OPTIONS)
    apis.prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(server), grpc_server)
    apis.model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(server), grpc_server)
    try:
        bound = grpc_server.add_insecure_port(f"{address}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        raise UserError(f"cannot listen for gRPC on {address}:{port}: is the port in use?")
    grpc_server.start()
    return grpc_server


# ---------------------------------------------------------------- REST: TensorFlow Serving's JSON API

REST_PATH = re.compile(r"/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>-?\d+)|/labels/(?P<label>[^/:]+))?"
                       r"(?:/(?P<resource>metadata)|:(?P<method>predict|classify|regress))?/?")


def _json_inputs(value, signature):
    """A JSON value for the signature's inputs -> {alias: ndarray} in each input's dtype."""
    if not isinstance(value, dict):
        if len(signature.inputs) != 1:
            raise ServingError(Code.INVALID_ARGUMENT,
                               f"name the inputs: the signature takes {sorted(signature.inputs)}")
        value = {next(iter(signature.inputs)): value}
    inputs = {}
    for alias, data in value.items():
        info = signature.inputs.get(alias)
        try:
            array = np.asarray(data)
            if array.dtype.kind not in "biuf":
                raise ValueError(f"values of type {array.dtype.kind!r}")
            inputs[alias] = array.astype(DTYPES[info.dtype][0]) if info is not None and info.dtype in DTYPES else array
        except (ValueError, TypeError) as err:
            raise ServingError(Code.INVALID_ARGUMENT, f"input {alias!r} is not a numeric tensor "
                               f"of one shape ({' '.join(str(err).split())[:200]})") from None
    return inputs


def rest_predict(loaded, body):
    """POST :predict. Row format: {"instances": [...]} -> {"predictions": [...]};
    columnar: {"inputs": ...} -> {"outputs": ...}, as TensorFlow Serving answers them."""
    if not isinstance(body, dict):
        raise ServingError(Code.INVALID_ARGUMENT, "the request body must be a JSON object")
    name = body.get("signature_name") or DEFAULT_SIGNATURE
    if name not in loaded.signatures:
        raise ServingError(Code.INVALID_ARGUMENT, f'Serving signature name: "{name}" not found in signature def')
    signature = loaded.signatures[name]
    if ("instances" in body) == ("inputs" in body):
        raise ServingError(Code.INVALID_ARGUMENT, "Missing 'inputs' or 'instances' key" if "inputs" not in body
                           else "Both 'inputs' and 'instances' keys are present; use one")
    if "inputs" in body:
        outputs = signature.run(_json_inputs(body["inputs"], signature))
        listed = {alias: value.tolist() for alias, value in outputs.items()}
        return {"outputs": listed if len(listed) > 1 else next(iter(listed.values()))}
    instances = body["instances"]
    if not isinstance(instances, list) or not instances:
        raise ServingError(Code.INVALID_ARGUMENT, "'instances' must be a non-empty list")
    if all(isinstance(row, dict) for row in instances):
        keys = set(instances[0])
        if any(set(row) != keys for row in instances):
            raise ServingError(Code.INVALID_ARGUMENT, "every instance must name the same inputs")
        columns = {k: [row[k] for row in instances] for k in keys}
    else:
        columns = instances
    outputs = signature.run(_json_inputs(columns, signature))
    rows = len(next(iter(outputs.values())))
    if len(outputs) == 1:
        return {"predictions": next(iter(outputs.values())).tolist()}
    listed = {alias: value.tolist() for alias, value in outputs.items()}
    return {"predictions": [{alias: listed[alias][i] for alias in listed} for i in range(rows)]}


class RestHandler(http.server.BaseHTTPRequestHandler):
    server_version = "serve.py"
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def _reply(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self, method):
        server = self.server.model_server
        try:
            path = self.path.split("?", 1)[0]
            match = REST_PATH.fullmatch(path)
            if not match:
                raise ServingError(Code.NOT_FOUND, f"Malformed request: {method} {path}")
            name, label, resource, verb = match["name"], match["label"], match["resource"], match["method"]
            version = int(match["version"]) if match["version"] else None
            if method == "GET" and verb is None and resource is None:
                payload = {"model_version_status": [
                    {"version": str(v), "state": State.Name(state),
                     "status": {"error_code": "UNKNOWN" if error else "OK", "error_message": error}}
                    for v, state, error in server.status(name, version, label)]}
            elif method == "GET" and resource == "metadata":
                loaded = server.resolve(name, version, label)
                payload = {"model_spec": {"name": name, "signature_name": "", "version": str(loaded.version)},
                           "metadata": {"signature_def": json_format.MessageToDict(
                               loaded.signature_defs, preserving_proto_field_name=True)}}
            elif method == "POST" and verb == "predict":
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"null")
                except ValueError as err:
                    raise ServingError(Code.INVALID_ARGUMENT, f"JSON Parse error: {err}") from None
                payload = rest_predict(server.resolve(name, version, label), body)
            elif method == "POST" and verb in ("classify", "regress"):
                raise ServingError(Code.UNIMPLEMENTED, f"{verb} is not implemented by this development server")
            else:
                raise ServingError(Code.INVALID_ARGUMENT, f"Malformed request: {method} {path}")
            self._reply(200, payload)
        except ServingError as err:
            self._reply(HTTP_STATUS.get(err.code, 500), {"error": err.message})
        except Exception as err:  # noqa: BLE001 - a bug must not take the server down
            traceback.print_exc()
            self._reply(500, {"error": f"{type(err).__name__}: {err}"})

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")


def start_rest(server, address, port):
    try:
        httpd = http.server.ThreadingHTTPServer((address, port), RestHandler)
    except OSError as err:
        raise UserError(f"cannot listen for REST on {address}:{port}: {err.strerror}") from None
    httpd.daemon_threads = True
    httpd.model_server = server
    threading.Thread(target=httpd.serve_forever, name="rest", daemon=True).start()
    return httpd


# ---------------------------------------------------------------- the command line

def true_or_false(text):
    """tensorflow_model_server's boolean flags: --enable_batching=true|false."""
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def parse_args(argv=None):
    p = ArgumentParser(
        description="A DEVELOPMENT model server with TensorFlow Serving's gRPC and REST APIs and flags, "
                    "for laptops without Docker. Use tensorflow/serving in production.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model_name", default="default", help="the name clients ask for")
    p.add_argument("--model_base_path",
                   help="directory of integer version sub-directories, each a SavedModel; the highest is served")
    p.add_argument("--model_config_file", metavar="FILE",
                   help="instead of --model_name and --model_base_path: TensorFlow Serving's model config "
                        "(text protobuf model_config_list: models, version policies, version labels)")
    p.add_argument("--model_config_file_poll_wait_seconds", type=int, default=0,
                   help="seconds between reads of --model_config_file (0: read it only at start-up)")
    p.add_argument("--port", type=int, default=8500, help="gRPC port")
    p.add_argument("--rest_api_port", type=int, default=0, help="REST port (0: no REST API)")
    p.add_argument("--bind_address", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 exposes the server to your network")
    p.add_argument("--file_system_poll_wait_seconds", type=int, default=1,
                   help="seconds between looks for new versions (0: look only at start-up)")
    p.add_argument("--enable_batching", type=true_or_false, default=True, metavar="true|false",
                   help="merge concurrent requests for the same signature into one call")
    p.add_argument("--max_batch_size", type=int, default=10000,
                   help="largest batch a request may carry (larger: INVALID_ARGUMENT), and largest merged batch")
    p.add_argument("--grpc_max_threads", type=int, default=64, help="threads answering gRPC requests")
    p.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0,
                   help="threads for one operation (0: one per core)")
    p.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0,
                   help="operations run at once (0: one per core)")
    args = p.parse_args(argv)
    for flag, low in (("port", 1), ("rest_api_port", 0), ("max_batch_size", 1), ("grpc_max_threads", 1),
                      ("file_system_poll_wait_seconds", 0), ("model_config_file_poll_wait_seconds", 0),
                      ("tensorflow_intra_op_parallelism", 0), ("tensorflow_inter_op_parallelism", 0)):
        if getattr(args, flag) < low:
            raise UsageError(f"--{flag} must be at least {low}, not {getattr(args, flag)}")
    if args.port == args.rest_api_port:
        raise UsageError(f"--port and --rest_api_port must differ (both are {args.port})")
    if args.model_config_file:
        if args.model_base_path:
            raise UsageError("give --model_config_file or --model_base_path, not both "
                             "(the config file names each model's base_path)")
    elif not args.model_base_path:
        raise UsageError("give --model_base_path (one model) or --model_config_file (a model config)")
    elif not Path(args.model_base_path).is_dir():
        raise UsageError(f"--model_base_path {args.model_base_path} is not a directory")
    return args


@entry_point
def main(argv=None):
    args = parse_args(argv)
    tf.config.threading.set_intra_op_parallelism_threads(args.tensorflow_intra_op_parallelism)
    tf.config.threading.set_inter_op_parallelism_threads(args.tensorflow_inter_op_parallelism)
    server = ModelServer()
    config = None
    if args.model_config_file:
        config = ModelConfigFile(args.model_config_file, server, args.max_batch_size, args.enable_batching)
        config.reload(first=True)
    else:
        server.models = {args.model_name: ServedModel(args.model_name, args.model_base_path,
                                                      args.max_batch_size, args.enable_batching)}
    log(f"serve.py: a development server with TensorFlow Serving's API for "
        f"{', '.join(f'{m.name!r} from {m.base_path}' for m in server.models.values())}")

    # Like tensorflow_model_server: open the ports only once every model has a version that answers.
    server.poll()
    for model in server.models.values():
        if not model.aspired_versions(model.versions_on_disk()):
            log(f"waiting for a version of {model.name} under {model.base_path} (a directory named by an integer"
                f"{' that its version policy asks for' if model.policy[0] == 'specific' else ''})")
    while not all(model.loaded for model in server.models.values()):
        for model in server.models.values():
            if model.given_up():
                raise UserError(f"no version of {model.name} under {model.base_path} could be loaded: "
                                f"{model.status()[0][2]}")
        time.sleep(1)
        server.poll()
    if config:
        config.set_labels(strict=True)

    grpc_server = start_grpc(server, args.bind_address, args.port, args.grpc_max_threads)
    httpd = start_rest(server, args.bind_address, args.rest_api_port) if args.rest_api_port else None
    rest = f", REST API on http://{args.bind_address}:{args.rest_api_port}/v1/models/" if httpd else ""
    log(f"gRPC API on {args.bind_address}:{args.port}{rest} (Ctrl-C stops)")

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill` and Kubernetes stop it like Ctrl-C
    # What to do again, and every how many seconds (0: never).
    every = {server.poll: args.file_system_poll_wait_seconds}
    if config:
        every[config.reload] = args.model_config_file_poll_wait_seconds
    due = {action: time.monotonic() + seconds for action, seconds in every.items() if seconds > 0}
    try:
        while True:
            time.sleep(0.5)
            now = time.monotonic()
            for action in [a for a, t in due.items() if now >= t]:
                due[action] = now + every[action]
                action()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        if httpd:
            httpd.shutdown()
        grpc_server.stop(grace=2).wait()
        log("stopped")


# ---------------------------------------------------------------- for tests and benchmarks

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(model_base_path=None, model_name="mnist", args=(), timeout=120, model_config_file=None):
    """Run serve.py as a child process on free loopback ports until the block ends.

    Serves `model_base_path` as `model_name`, or the models of
    `model_config_file`. Yields grpc_port, rest_port, process and log() (its
    output so far) once `model_name` answers GetModelStatus as AVAILABLE.
    """
    grpc_port, rest_port = free_port(), free_port()
    while rest_port == grpc_port:
        rest_port = free_port()
    served = (["--model_config_file", str(model_config_file)] if model_config_file else
              ["--model_name", model_name, "--model_base_path", str(model_base_path)])
    command = [sys.executable, str(SRC / "serve.py"), *served, "--port", str(grpc_port),
               "--rest_api_port", str(rest_port), *map(str, args)]
    with tempfile.TemporaryFile("w+") as output, grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        def read_log():
            output.flush()
            output.seek(0)
            return output.read()

        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True, env=child_env())
        try:
            stub = apis.model_service_pb2_grpc.ModelServiceStub(channel)
            request = apis.get_model_status_pb2.GetModelStatusRequest(model_spec={"name": model_name})
            deadline = time.time() + timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"serve.py exited with {process.returncode}:\n{read_log()}")
                try:
                    status = stub.GetModelStatus(request, timeout=1)
                    if any(s.state == State.AVAILABLE for s in status.model_version_status):
                        break
                except grpc.RpcError:
                    pass
                if time.time() > deadline:
                    raise RuntimeError(f"serve.py did not serve {model_name} within {timeout} s:\n{read_log()}")
                time.sleep(0.2)
            yield types.SimpleNamespace(grpc_port=grpc_port, rest_port=rest_port, process=process, log=read_log)
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
