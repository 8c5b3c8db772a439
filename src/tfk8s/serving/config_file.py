"""--model_config_file: TensorFlow Serving's model config, read at start-up and again while serving."""
from pathlib import Path

from tfk8s.cli import UsageError, UserError
from tfk8s.serving import model_config
from tfk8s.serving.models import ServedModel
from tfk8s.serving.protocol import Code, ServingError, log


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


