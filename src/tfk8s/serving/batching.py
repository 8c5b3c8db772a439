"""Server-side batching, as TensorFlow Serving's --enable_batching and --batching_parameters_file.

Requests for one signature queue up; batch threads take them in batches of
up to max_batch_size rows and run each batch as one call of the model. A
batch opens with its first task and closes when full, or batch_timeout_micros
after it opened; at most max_enqueued_batches batches wait. A task larger
than max_batch_size is INVALID_ARGUMENT, a full queue UNAVAILABLE, with
TensorFlow's messages (shared_batch_scheduler.h). A task whose caller went
away (a cancelled gRPC call) is dropped before its batch runs.

The parameters file is TensorFlow Serving's BatchingParameters text
protobuf, parsed with that message's own definition:

    max_batch_size { value: 128 }
    batch_timeout_micros { value: 0 }
    max_enqueued_batches { value: 100 }
    num_batch_threads { value: 2 }
    allowed_batch_sizes: 32  allowed_batch_sizes: 128
"""
import os
import threading
import time
from collections import deque

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2

from tfk8s.serving.protocol import Code, ServingError, debug, invalid, skipped

# TensorFlow's SharedBatchScheduler defaults: what --enable_batching gives without a parameters file.
DEFAULTS = {"max_batch_size": 1000, "batch_timeout_micros": 0, "max_enqueued_batches": 10,
            "num_batch_threads": os.cpu_count() or 1}
_FIELDS = [("max_batch_size", 1, "Int64Value"), ("batch_timeout_micros", 2, "Int64Value"),
           ("max_enqueued_batches", 3, "Int64Value"), ("num_batch_threads", 4, "Int64Value"),
           ("thread_pool_name", 5, "StringValue"), ("allowed_batch_sizes", 6, None),
           ("pad_variable_length_inputs", 7, None), ("enable_large_batch_splitting", 8, "BoolValue"),
           ("max_execution_batch_size", 9, "Int64Value")]


def _batching_parameters_class():
    """tensorflow.serving.BatchingParameters (session_bundle_config.proto), built from its field list."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    file = descriptor_pb2.FileDescriptorProto(name="session_bundle_config.proto", package="tensorflow.serving",
                                              dependency=["google/protobuf/wrappers.proto"], syntax="proto3")
    message = file.message_type.add(name="BatchingParameters")
    field_type = descriptor_pb2.FieldDescriptorProto
    for name, number, wrapper in _FIELDS:
        field = message.field.add(name=name, number=number, json_name=name)
        if wrapper:
            field.type, field.label = field_type.TYPE_MESSAGE, field_type.LABEL_OPTIONAL
            field.type_name = f".google.protobuf.{wrapper}"
        elif name == "allowed_batch_sizes":
            field.type, field.label = field_type.TYPE_INT64, field_type.LABEL_REPEATED
        else:
            field.type, field.label = field_type.TYPE_BOOL, field_type.LABEL_OPTIONAL
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


BatchingParameters = _batching_parameters_class()


def read_parameters(path=None):
    """{max_batch_size, batch_timeout_micros, max_enqueued_batches, num_batch_threads, allowed_batch_sizes}
    from a parameters file (None: TensorFlow's defaults); ValueError says what is wrong."""
    params = dict(DEFAULTS, allowed_batch_sizes=[])
    if path is None:
        return params
    message = BatchingParameters()
    try:
        text_format.Parse(open(path, encoding="utf-8").read(), message)
    except OSError as err:
        raise ValueError(f"cannot read --batching_parameters_file {path}: {err.strerror}") from None
    except (text_format.ParseError, UnicodeDecodeError) as err:
        raise ValueError(f"Invalid protobuf file: '{path}' ({err})") from None
    for name in DEFAULTS:
        if message.HasField(name):
            params[name] = getattr(message, name).value
    params["allowed_batch_sizes"] = list(message.allowed_batch_sizes)
    if params["num_batch_threads"] <= 0:
        raise ValueError(f"num_batch_threads must be positive; was {params['num_batch_threads']}")
    if params["max_batch_size"] <= 0:
        raise ValueError(f"max_batch_size must be positive; was {params['max_batch_size']}")
    if params["max_enqueued_batches"] <= 0:
        raise ValueError(f"max_enqueued_batches must be positive; was {params['max_enqueued_batches']}")
    sizes = params["allowed_batch_sizes"]
    if sizes and sizes[-1] != params["max_batch_size"]:
        raise ValueError(f"Last entry in allowed_batch_sizes must match max_batch_size; last entry was {sizes[-1]}; "
                         f"expected {params['max_batch_size']}")
    return params


class _Task:
    def __init__(self, inputs, rows, cancelled):
        self.inputs, self.rows, self.cancelled = inputs, rows, cancelled
        self.outputs, self.error, self.finished = None, None, False
        self.signal = threading.Event()  # set when finished, or when offered to run the next batch


class Scheduler:
    """One signature's batch queue.

    The batch "threads" are the callers' own: a caller whose request is
    queued runs the next ready batch itself when fewer than num_batch_threads
    batches are running, then offers the next one to the oldest caller still
    waiting. No thread is added, and no hand-off to another thread is paid
    per batch: under load, batches grow by themselves while the model runs.
    """

    def __init__(self, call, params, name="batch"):
        self.call, self.name = call, name
        self.max_batch_size = params["max_batch_size"]
        self.timeout = params["batch_timeout_micros"] / 1e6
        self.max_batches = params["max_enqueued_batches"]
        self.threads = params["num_batch_threads"]
        self.allowed = params["allowed_batch_sizes"]
        self.lock = threading.Lock()
        self.batches = deque()  # each [tasks, rows, opened at]
        self.running = 0

    def run(self, inputs, cancelled=None):
        """Queue one request's inputs; return its own rows of every output once its batch ran."""
        sizes = set()
        for value in inputs.values():
            if value.ndim == 0:
                raise invalid("Batching Run() input tensors must have at least one dimension")
            sizes.add(value.shape[0])
        if len(sizes) > 1:
            raise invalid("Batching Run() input tensors must have equal 0th-dimension size")
        rows = sizes.pop() if sizes else 0
        if rows > self.max_batch_size:
            raise invalid(f"Task size {rows} is larger than maximum input batch size {self.max_batch_size}")
        if rows == 0:
            return self.call(inputs)
        task = _Task(inputs, rows, cancelled)
        with self.lock:
            if not self.batches or self.batches[-1][1] + rows > self.max_batch_size:
                if len(self.batches) >= self.max_batches:
                    raise ServingError(Code.UNAVAILABLE, "The batch scheduling queue to which this task was "
                                       f"submitted is full; currently {len(self.batches)} batches enqueued and "
                                       f"max_enqueued_batches is {self.max_batches}")
                self.batches.append([[], 0, time.monotonic()])
            self.batches[-1][0].append(task)
            self.batches[-1][1] += rows
            queued = sum(len(batch[0]) for batch in self.batches)
        debug(f"{self.name}: queued a task of {rows} row(s); {queued} task(s) waiting")
        while not task.finished:
            batch, wait = self._claim()
            if batch is not None:
                self._run(batch)
                continue
            task.signal.wait(wait)
            task.signal.clear()
        if task.error is not None:
            raise task.error
        return task.outputs

    def _claim(self):
        """(the next batch to run, None) if this caller may run it now, else (None, seconds to wait at most)."""
        with self.lock:
            if not self.batches:
                return None, None
            tasks, rows, opened = self.batches[0]
            wait = opened + self.timeout - time.monotonic()
            if self.running >= self.threads:
                return None, None
            if rows >= self.max_batch_size or len(self.batches) > 1 or wait <= 0:
                self.running += 1
                return self.batches.popleft()[0], None
            return None, wait

    def _finish(self, tasks):
        with self.lock:
            self.running -= 1
            for task in tasks:
                task.finished = True
                task.signal.set()
            if self.batches:  # the oldest caller still waiting runs the next batch
                self.batches[0][0][0].signal.set()

    def _run(self, tasks):
        """Run one batch: its cancelled tasks dropped, the rest merged into one call of the model."""
        live = []
        for task in tasks:
            if task.cancelled is not None and task.cancelled():
                skipped()
                task.error = ServingError(Code.CANCELLED, "Cancelled")
            else:
                live.append(task)
        try:
            if live:
                self._merged(live)
        finally:
            self._finish(tasks)

    def _merged(self, tasks):
        try:
            first = tasks[0].inputs
            for task in tasks[1:]:
                for alias, value in task.inputs.items():
                    if value.shape[1:] != first[alias].shape[1:]:
                        raise ServingError(Code.FAILED_PRECONDITION, f"Tensors with name '{alias}' from different "
                                           "tasks have different shapes and padding is turned off. Set "
                                           "pad_variable_length_inputs to true, or ensure that all tensors with the "
                                           "same name have equal dimensions starting with the first dim.")
            rows = sum(task.rows for task in tasks)
            padded = next((size for size in self.allowed if size >= rows), rows)
            merged = {}
            for alias in first:
                parts = [task.inputs[alias] for task in tasks]
                if padded > rows:  # allowed_batch_sizes: pad with copies of the first row
                    parts.append(np.repeat(parts[0][:1], padded - rows, axis=0))
                merged[alias] = np.concatenate(parts) if len(parts) > 1 else parts[0]
            outputs, start = self.call(merged), 0
            debug(f"{self.name}: ran a batch of {len(tasks)} task(s), {padded} row(s)")
            for task in tasks:
                task.outputs = {k: v[start:start + task.rows] for k, v in outputs.items()}
                start += task.rows
        except ServingError as err:
            for task in tasks:
                task.error = err
        except Exception as err:
            for task in tasks:
                task.error = ServingError(Code.INTERNAL, f"{type(err).__name__}: {err}")
