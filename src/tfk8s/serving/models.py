"""The models a server serves: their versions on disk, loaded, labelled, and their states.

As TensorFlow Serving's file-system source, loader harness and
AvailabilityPreservingPolicy do it:
- the versions are the children of base_path that tfk8s.versions reads as
  numbers, picked by the version policy (`latest` N, `all`, `specific`);
- a version that fails to load is tried again every
  --load_retry_interval_micros, up to --max_num_load_retries more times (a
  version still being copied in gets loaded once it is complete), then stays
  END with its error until its directory goes away;
- a served version is unloaded only once a version the policy asks for is
  AVAILABLE, or when the policy asks for none: a broken newest version, or a
  deleted one, never leaves the model without an answer;
- a base_path that does not exist changes nothing for any model in that poll.
"""
import threading
import time
from pathlib import Path

from tfk8s import versions
from tfk8s.serving.protocol import Code, ServingError, State, debug, invalid, log
from tfk8s.serving.signatures import LoadedVersion, LoadError


class VersionState:
    """What GetModelStatus reports for one version."""

    def __init__(self, state, code=Code.OK, message=""):
        self.state, self.code, self.message = state, code, message


class ServedModel:
    """The versions of one model, and its labels (a model config file sets them)."""

    def __init__(self, name, base_path, options, policy=("latest", 1)):
        self.name, self.base_path, self.options, self.policy = name, Path(base_path), options, policy
        self.labels = {}
        self.lock = threading.Lock()
        self.loaded = {}      # version -> LoadedVersion
        self.states = {}      # version -> VersionState, newest entries kept forever (as the state monitor does)
        self.attempts = {}    # version -> failed load attempts
        self.retry_at = {}    # version -> monotonic time of its next attempt
        self.failed = set()   # versions whose retries are exhausted (not tried again while on disk)
        self.ignored = None   # the last set of non-version children logged
        self.warned_empty = False

    def listing(self):
        """{version: path} on disk, or None when base_path cannot be read."""
        if not self.base_path.is_dir():
            return None
        ignored = versions.ignored(self.base_path)
        if ignored != self.ignored and ignored:
            log(f"{self.name}: ignoring {', '.join(map(repr, ignored))} under {self.base_path}: not a version "
                "directory (a directory named by an integer, as TensorFlow Serving reads it)")
        self.ignored = ignored
        return versions.listing(self.base_path)

    def aspired(self, on_disk):
        """The versions the policy asks for, among those on disk, newest first."""
        kind, value = self.policy
        found = sorted(on_disk, reverse=True)
        if kind == "all":
            return found
        if kind == "specific":
            return [v for v in found if v in value]
        return found[:value]

    def poll(self, on_disk):
        """Load what the policy asks for (newest first), then unload what it no longer asks for."""
        for version in set(self.failed) | set(self.attempts):
            if version not in on_disk:  # gone from disk: a version put back later gets fresh attempts
                self.failed.discard(version)
                self.attempts.pop(version, None)
                self.retry_at.pop(version, None)
        aspired = self.aspired(on_disk)
        for version in aspired:
            if version not in self.loaded and version not in self.failed and \
                    time.monotonic() >= self.retry_at.get(version, 0):
                self._load(version, on_disk[version])
        ready = [v for v in aspired if v in self.loaded]
        stale = [v for v in self.loaded if v not in aspired]
        if stale and (ready or not aspired or len(stale) > 1):
            # Availability first: keep the newest stale version while no aspired one answers.
            keep = [] if ready or not aspired else [max(stale)]
            for version in sorted(set(stale) - set(keep)):
                with self.lock:
                    del self.loaded[version]  # requests still running on it finish: they hold a reference
                    self.states[version] = VersionState(State.END)
                log(f"unloaded {self.name} version {version}")

    def _load(self, version, path):
        with self.lock:
            self.states[version] = VersionState(State.LOADING)
        began = time.time()
        try:
            loaded = LoadedVersion(version, path, self.options)
        except LoadError as err:
            attempt = self.attempts.get(version, 0) + 1
            self.attempts[version] = attempt
            given_up = attempt > self.options.max_num_load_retries
            log(f"Loading servable: {{name: {self.name} version: {version}}} failed: {err.code.name}: "
                f"{err.message}" + (f"; retry {attempt} of {self.options.max_num_load_retries} in "
                                    f"{self.options.load_retry_interval:g} s" if not given_up else
                                    f"; exhausted max_num_retries: {self.options.max_num_load_retries}"))
            if given_up:
                self.failed.add(version)
                with self.lock:
                    self.states[version] = VersionState(State.END, err.code, err.message)
            else:
                self.retry_at[version] = time.monotonic() + self.options.load_retry_interval
            return
        with self.lock:
            self.loaded[version] = loaded
            self.states[version] = VersionState(State.AVAILABLE)
        self.attempts.pop(version, None)
        self.retry_at.pop(version, None)
        log(f"Successfully loaded servable version {{name: {self.name} version: {version}}} from {path} in "
            f"{time.time() - began:.1f} s (signatures: {', '.join(sorted(loaded.signatures))})")

    def settled(self):
        """True once an aspired version answers or one failed for good: start-up waits for this, as ServerCore
        waits for ServableRequest::Latest, met by the first version of the stream AVAILABLE or END (2.20.0
        servable_state_monitor.cc HasAnyServableInStreamReachedState); the others go on loading after."""
        on_disk = versions.listing(self.base_path)
        aspired = self.aspired(on_disk)
        return any(v in self.loaded or v in self.failed for v in aspired)

    def resolve(self, version=None, label=None):
        """The LoadedVersion a request names: a number, a label, or (neither) the newest."""
        with self.lock:
            if label is not None:
                if label not in self.labels:
                    raise invalid(f"Unrecognized servable version label: {label}")
                version = self.labels[label]
            if version is None:
                if not self.loaded:
                    raise ServingError(Code.NOT_FOUND, f"Servable not found for request: Latest({self.name})")
                return self.loaded[max(self.loaded)]
            if version not in self.loaded:
                raise ServingError(Code.NOT_FOUND, f"Servable not found for request: Specific({self.name}, {version})")
            return self.loaded[version]

    def status(self, version=None):
        """[(version, VersionState)] newest first, as GetModelStatus reports it (labels are not resolved)."""
        with self.lock:
            if version is not None:
                if version not in self.states:
                    raise ServingError(Code.NOT_FOUND, f"Could not find version {version} of model {self.name}")
                return [(version, self.states[version])]
            if not self.states:
                raise ServingError(Code.NOT_FOUND, f"Could not find any versions of model {self.name}")
            return [(v, self.states[v]) for v in sorted(self.states, reverse=True)]


class ModelServer:
    """The models by name, and the questions every API asks of them."""

    def __init__(self, models=()):
        self.models = {model.name: model for model in models}
        self.retired = {}  # models a config no longer lists: their status stays, as TensorFlow Serving's
        self.poll_lock = threading.Lock()
        self.missing_logged = set()
        self.polls = 0  # looks at the base paths so far (the debug line of each says what it found)

    def new_model(self, name, base_path, options, policy):
        """A model to serve (not yet among self.models: the config that names it decides)."""
        return ServedModel(name, base_path, options, policy)

    def model(self, name, missing_message):
        model = self.models.get(name)
        if model is None:
            raise ServingError(Code.NOT_FOUND, missing_message)
        return model

    def resolve(self, spec):
        """ServerCore::GetServableHandle for a ModelSpec (None: an empty one)."""
        name = spec.name if spec is not None else ""
        if not name:
            raise invalid("ModelSpec has no name specified.")
        version = spec.version.value if spec.HasField("version") else None
        # A label set, even to "", is a label (the version_choice oneof): "" is an unknown one, as upstream.
        label = spec.version_label if spec.WhichOneof("version_choice") == "version_label" else None
        model = self.models.get(name)
        if model is None:
            if label is not None:
                raise invalid(f"Unrecognized servable version label: {label}")
            which = f"Specific({name}, {version})" if version is not None else f"Latest({name})"
            raise ServingError(Code.NOT_FOUND, f"Servable not found for request: {which}")
        return model.resolve(version, label)

    def status(self, name, version=None):
        model = self.models.get(name) or self.retired.get(name)
        if model is None:
            raise ServingError(Code.NOT_FOUND, f"Could not find any versions of model {name}")
        return model.status(version)

    def retire(self, model):
        """A model the config no longer lists: unloaded, its versions kept in GetModelStatus as END."""
        with model.lock:
            model.loaded.clear()
            for state in model.states.values():
                state.state = State.END
        self.retired[model.name] = model
        log(f"unloaded every version of {model.name}: the model config no longer lists it")

    def poll(self):
        """One look at every base path; a base path that is missing aborts the look for every model."""
        with self.poll_lock:
            self.polls += 1
            models = list(self.models.values())
            listings = {}
            for model in models:
                listing = model.listing()
                if listing is None:
                    if model.name not in self.missing_logged:
                        log(f"FileSystemStoragePathSource encountered a filesystem access error: Could not find base "
                            f"path {model.base_path} for servable {model.name}; nothing changes until it exists")
                        self.missing_logged.add(model.name)
                    debug(f"poll {self.polls}: no base path {model.base_path} for {model.name}: nothing changed")
                    return
                listings[model.name] = listing
            self.missing_logged.clear()
            for model in models:
                if not listings[model.name] and not model.warned_empty:
                    log(f"No versions of servable {model.name} found under base path {model.base_path}. Did you "
                        "forget to name your leaf directory as a number (eg. '/1/')?")
                model.warned_empty = not listings[model.name]
                model.poll(listings[model.name])
            debug(f"poll {self.polls}: " + "; ".join(
                f"{m.name}: on disk {sorted(listings[m.name])}, loaded {sorted(m.loaded)}" for m in models))
