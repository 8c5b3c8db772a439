"""Server-side batching (tfk8s.serving.batching) on its own: TensorFlow Serving's parameters, limits and errors."""
import threading
import time

import numpy as np
import pytest

from support import wait_for
from tfk8s.serving import batching
from tfk8s.serving.protocol import Code, ServingError

PARAMS = dict(batching.DEFAULTS, allowed_batch_sizes=[])


def busy_model(calls, lock, seconds=0.02):
    def model(inputs):
        with lock:
            calls.append(len(inputs["x"]))
        time.sleep(seconds)  # a busy model: callers queue up behind it
        return {"y": inputs["x"] * 2}
    return model


def held_model(calls, gate):
    """A model that runs until the test opens `gate`: the callers behind it queue up for as long as the test
    needs, however loaded the machine."""
    def model(inputs):
        calls.append(len(inputs["x"]))
        assert gate.wait(60), "the test never let the model finish"
        return {"y": inputs["x"] * 2}
    return model


def test_merged_requests_never_exceed_the_batch_limit_and_each_caller_gets_its_rows():
    calls, lock = [], threading.Lock()
    scheduler = batching.Scheduler(busy_model(calls, lock), dict(PARAMS, max_batch_size=8, num_batch_threads=1,
                                                                 max_enqueued_batches=100))
    results = {}

    def caller(i):
        results[i] = scheduler.run({"x": np.full((1 + i % 3, 2), i)})["y"]

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == list(range(40))
    for i, y in results.items():
        np.testing.assert_array_equal(y, np.full((1 + i % 3, 2), 2 * i))
    assert max(calls) <= 8 and len(calls) < 40 and sum(calls) == sum(1 + i % 3 for i in range(40))


def test_a_task_too_large_and_a_full_queue_get_tensorflows_errors():
    calls, gate = [], threading.Event()
    scheduler = batching.Scheduler(held_model(calls, gate), dict(PARAMS, max_batch_size=4, num_batch_threads=1,
                                                                 max_enqueued_batches=1))
    with pytest.raises(ServingError) as caught:
        scheduler.run({"x": np.zeros((5, 1))})
    assert (caught.value.code, caught.value.message) == (Code.INVALID_ARGUMENT,
                                                         "Task size 5 is larger than maximum input batch size 4")
    errors = []

    def caller():
        try:
            scheduler.run({"x": np.zeros((4, 1))})
        except ServingError as err:
            errors.append(err)

    threads = [threading.Thread(target=caller) for _ in range(4)]
    threads[0].start()
    wait_for(lambda: calls, "the first batch running")
    threads[1].start()
    wait_for(lambda: len(scheduler.batches) == 1, "the second batch queued")
    for t in threads[2:]:
        t.start()
        t.join(30)  # refused at once, while the first batch runs
    gate.set()
    for t in threads:
        t.join(30)
    # One batch runs, one waits (max_enqueued_batches 1): the other two are refused at once.
    assert len(errors) == 2 and {e.code for e in errors} == {Code.UNAVAILABLE}
    assert errors[0].message.startswith("The batch scheduling queue to which this task was submitted is full")
    for inputs, message in (({"x": np.zeros(())}, "Batching Run() input tensors must have at least one dimension"),
                            ({"x": np.zeros((1, 1)), "z": np.zeros((2, 1))},
                             "Batching Run() input tensors must have equal 0th-dimension size")):
        with pytest.raises(ServingError) as caught:
            scheduler.run(inputs)
        assert caught.value.message == message


def test_a_cancelled_task_is_dropped_before_its_batch_runs():
    calls, gate, errors = [], threading.Event(), []
    scheduler = batching.Scheduler(held_model(calls, gate), dict(PARAMS, max_batch_size=1, num_batch_threads=1))
    first = threading.Thread(target=scheduler.run, args=({"x": np.zeros((1, 1))},))
    first.start()
    wait_for(lambda: calls, "the first batch running")

    def cancelled_caller():
        try:
            scheduler.run({"x": np.ones((1, 1))}, cancelled=lambda: True)
        except ServingError as err:
            errors.append(err)

    second = threading.Thread(target=cancelled_caller)
    second.start()
    wait_for(lambda: len(scheduler.batches) == 1, "the cancelled task queued behind the first batch")
    gate.set()
    first.join(30)
    second.join(30)
    assert [e.code for e in errors] == [Code.CANCELLED] and calls == [1]


def test_batching_parameters_are_tensorflow_servings_text_protobuf(tmp_path):
    path = tmp_path / "batching.config"
    path.write_text("max_batch_size { value: 128 } batch_timeout_micros { value: 0 } "
                    "max_enqueued_batches { value: 1000000 } num_batch_threads { value: 8 } "
                    "allowed_batch_sizes: 64 allowed_batch_sizes: 128")
    assert batching.read_parameters(path) == {"max_batch_size": 128, "batch_timeout_micros": 0,
                                              "max_enqueued_batches": 1000000, "num_batch_threads": 8,
                                              "allowed_batch_sizes": [64, 128]}
    assert batching.read_parameters(None)["max_batch_size"] == 1000
    for text, message in (("max_batch_size { valu: 1 }", 'has no field named "valu"'),
                          ("num_batch_threads { value: 0 }", "num_batch_threads must be positive; was 0"),
                          ("max_batch_size { value: 8 } allowed_batch_sizes: 4", "Last entry in allowed_batch_sizes "
                           "must match max_batch_size; last entry was 4; expected 8")):
        path.write_text(text)
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            batching.read_parameters(path)


def test_allowed_batch_sizes_pad_the_batch_and_each_caller_gets_its_rows():
    seen = []
    scheduler = batching.Scheduler(lambda inputs: seen.append(len(inputs["x"])) or {"y": inputs["x"] + 1},
                                   dict(PARAMS, max_batch_size=8, num_batch_threads=1, allowed_batch_sizes=[4, 8]))
    np.testing.assert_array_equal(scheduler.run({"x": np.arange(3)})["y"], [1, 2, 3])
    assert seen == [4]
