"""--model_config_file: TensorFlow Serving's model config, read at start-up and again while serving.

Read again every --model_config_file_poll_wait_seconds, as
tensorflow_model_server does (also when unchanged: a label refused because
its version was not loaded yet is tried again). A new config is applied
whole or not at all: a file that cannot be read, is not UTF-8, does not
parse, breaks TensorFlow Serving's rules, or points a label at a version that
is not AVAILABLE (UpdateModelVersionLabelMap) changes nothing - no version
policy, no base path, no label - and the reason is logged once.

With --allow_version_labels_for_unavailable_models, a label may point at a
version not loaded yet if the label is new or already points there (how a
server starts from a config that has labels); moving an existing label onto
an unavailable version is still refused.
"""
from pathlib import Path

from tfk8s.serving import model_config
from tfk8s.serving.protocol import Code, ServingError, invalid, log


def read_file(path):
    """The file as a ModelServerConfig; a ServingError in TensorFlow Serving's words (then why) otherwise.

    Needs no TensorFlow: serve.py checks the file with it before loading TensorFlow, as a bad file is refused
    at start-up in an instant.
    """
    path = Path(path)
    prefix = f"Invalid protobuf file: '{path}'"
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ServingError(Code.NOT_FOUND if isinstance(err, FileNotFoundError) else Code.INVALID_ARGUMENT,
                           f"{path}; {err.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise invalid(f"{prefix} (byte {err.start} is not UTF-8: a text protobuf is UTF-8 text)") from None
    try:
        return model_config.parse_text(text, str(path))
    except model_config.ConfigError as err:
        raise invalid(f"{prefix} ({err})") from None


def validate(config, path):
    """The config's models, checked by TensorFlow Serving's rules; INVALID_ARGUMENT otherwise."""
    try:
        return model_config.validate(config, str(path))
    except model_config.ConfigError as err:
        raise invalid(str(err).removeprefix(f"{path}: ")) from None


class ModelConfigFile:
    """The file, what was applied from it, and how to apply a new ModelServerConfig (also HandleReloadConfigRequest)."""

    def __init__(self, path, server, options, allow_unavailable_labels=False):
        self.path, self.server, self.options = Path(path), server, options
        self.allow_unavailable_labels = allow_unavailable_labels
        self.applied = None     # the ModelServerConfig in force
        self.last_error = None

    def read(self):
        """The file as a ModelServerConfig; INVALID_ARGUMENT (TensorFlow Serving's words, then why) otherwise."""
        return read_file(self.path)

    def _check_labels(self, configs):
        """UpdateModelVersionLabelMap's rule, checked for every model before anything changes."""
        for m in configs:
            model = self.server.models.get(m.name)
            current = model.labels if model is not None else {}
            for label, version in sorted(m.version_labels.items()):
                available = model is not None and version in model.loaded
                if available:
                    continue
                if self.allow_unavailable_labels and current.get(label, version) == version:
                    continue
                raise ServingError(Code.FAILED_PRECONDITION,
                                   f"Request to assign label to version {version} of model {m.name}, which is not "
                                   "currently available for inference")

    def apply(self, config):
        """Make `config` the one in force, or raise ServingError and change nothing."""
        configs = validate(config, self.path)
        self._check_labels(configs)
        models = {}
        for m in configs:
            policy = model_config.version_policy(m)
            model = self.server.models.get(m.name)
            if model is None:
                model = self.server.new_model(m.name, m.base_path, self.options, policy)
                self.server.retired.pop(m.name, None)
            else:
                if model.base_path != Path(m.base_path):
                    log(f"{m.name}: base_path {model.base_path} -> {m.base_path}; the versions loaded keep serving "
                        "until the new path's are AVAILABLE")
                    model.base_path = Path(m.base_path)
                model.policy = policy
            models[m.name] = model
        gone = sorted(set(self.server.models) - set(models))
        for name in gone:
            self.server.retire(self.server.models[name])
        self.server.models = models  # one assignment: a request sees the old dict or the new one
        for m in configs:
            labels = dict(m.version_labels)
            if models[m.name].labels != labels:
                with models[m.name].lock:
                    models[m.name].labels = labels
                log(f"labels of {m.name}: " + (", ".join(f"{k} -> {v}" for k, v in sorted(labels.items()))
                                               or "none"))
        log("model config in force: " + "; ".join(model_config.describe(m) for m in configs)
            + (f"; no longer serving {', '.join(gone)}" if gone else ""))
        self.applied = config

    def reload(self):
        """Read the file and apply it if it changed (or was refused before); a refusal is logged once."""
        try:
            config = self.read()
            if config == self.applied:
                self.last_error = None
                return
            self.apply(config)
            self.last_error = None
        except ServingError as err:
            if err.message != self.last_error:
                log(f"PollFilesystemAndReloadConfig failed to ReloadConfig: {err}; the config in force stays")
            self.last_error = err.message
            return
        self.server.poll()
