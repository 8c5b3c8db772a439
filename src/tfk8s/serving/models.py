"""The models a server serves: their versions on disk, loaded, labelled, and their states."""
import threading
import time
from pathlib import Path

from tfk8s import versions
from tfk8s.serving.protocol import MAX_LOAD_RETRIES, Code, ServingError, State, log
from tfk8s.serving.signatures import LoadedVersion


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


