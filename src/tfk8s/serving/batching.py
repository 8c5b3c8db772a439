"""Merging concurrent requests for one signature into one call of the model."""
import collections
import threading

import numpy as np


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

