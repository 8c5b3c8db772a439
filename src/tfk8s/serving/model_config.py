"""TensorFlow Serving's model config file: which versions of a model are served, and their labels.

TensorFlow Serving reads this file with --model_config_file and, given
--model_config_file_poll_wait_seconds, reads it again while it runs: moving
a label from one version to another is an edit of this file, not a restart.
src/serve.py reads the same file the same way. It is a text protobuf
(tensorflow_serving/config/model_server_config.proto), for example an A/B
rollout that serves two versions under the labels `stable` and `canary`:

    model_config_list {
      config {
        name: "mnist"
        base_path: "/mnt/nfs/exports/mnist"
        model_platform: "tensorflow"
        model_version_policy { specific { versions: 1767225600 versions: 1767312000 } }
        version_labels { key: "stable" value: 1767225600 }
        version_labels { key: "canary" value: 1767312000 }
      }
    }

On the cluster the file is the key `models.config` of the ConfigMap
mnist-model-config (kube/model-config.yaml); locally it is any file:

    python src/model_config.py init --config models.config --base_path $PWD/runs/local/export
    python src/model_config.py show --config models.config
    python src/model_config.py load --config models.config --version 1767312000     # load it first...
    python src/model_config.py wait --config models.config --server http://localhost:8501
    python src/model_config.py canary --config models.config --canary 1767312000    # ...then label it
    python src/model_config.py promote --config models.config      # stable := the canary's version
    python src/model_config.py serve --config models.config --base_path /mnt/nfs/exports/mnist-sweep/RUN/t03
    kubectl get configmap mnist-model-config -o yaml \\
      | python src/model_config.py promote --configmap - | kubectl apply -f -

Why one module of some 460 lines: the parser, the writer and the rules of the file
(what TensorFlow Serving accepts) are one format, and each subcommand is a few lines over them.
"""
import copy
import sys
import time
from pathlib import Path

import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tfk8s import rest, yamlfile
from tfk8s.cli import ArgumentParser, UsageError, UserError, duration, entry_point
from tfk8s.paths import KUBE, replace_text

MODEL = "mnist"
CONFIGMAP_KEY = "models.config"   # the file name TensorFlow Serving sees in the mounted ConfigMap
CONFIGMAP_SOURCE = KUBE / "model-config.yaml"
STABLE, CANARY = "stable", "canary"
MAX_VERSION = 2**63 - 1          # versions are int64 directory names
# What the API server adds to an object; a ConfigMap read with `kubectl get -o yaml` goes back without it.
SERVER_FIELDS = ("uid", "creationTimestamp", "managedFields", "generation", "selfLink")
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


class ConfigError(UserError):
    """A model config that TensorFlow Serving would refuse, or that does not say what an action needs."""


# ---------------------------------------------------------------- the text protobuf

def parse_text(text, source="the model config"):
    """Text protobuf -> ModelServerConfig, exactly as TensorFlow Serving parses it (unknown fields are errors)."""
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as err:
        raise ConfigError(f"{source} is not a valid model config: {err}") from None
    return config


def parse(text, source="the model config"):
    """parse_text(), then check(): a config this tool can work on."""
    return check(parse_text(text, source), source)


def dumps(config):
    return text_format.MessageToString(config)


def read(path):
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read the model config {path}: {err.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"the model config {path} is not a text file (byte {err.start} is not UTF-8: a text "
                          "protobuf is UTF-8 text)") from None
    return parse(text, str(path))


def write(path, config):
    """Replace `path` in one step: a server polling the file never reads half of it."""
    replace_text(path, dumps(config))


def validate(config, source="the model config"):
    """The rules TensorFlow Serving applies to a model_config_list (server_core.cc ValidateModelConfigList,
    GetPlatform), with its messages: what a server refuses. Returns the list of ModelConfigs."""
    if config.WhichOneof("config") != "model_config_list":
        raise ConfigError(f"{source}: ServerModelConfig type not supported. Only ModelConfigList is currently "
                          "supported")
    seen = set()
    for m in config.model_config_list.config:
        if m.name in seen:
            raise ConfigError(f"{source}: Illegal to list model {m.name} multiple times in config list")
        seen.add(m.name)
        if not m.base_path.startswith("/") and "://" not in m.base_path:
            raise ConfigError(f"{source}: Expected model {m.name} to have an absolute path or URI; "
                              f"got base_path()={m.base_path}")
        if not m.model_platform:
            raise ConfigError(f"{source}: Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                              f"ModelServerConfig::model_platform, model name is {m.name}")
        if m.model_platform != "tensorflow":
            raise ConfigError(f"{source}: Model {m.name} requests unsupported platform {m.model_platform}")
    return list(config.model_config_list.config)


def check(config, source="the model config"):
    """validate(), and what this tool needs besides: a named model, labels on versions the policy serves."""
    validate(config, source)
    if not config.model_config_list.config:
        raise ConfigError(f"{source} lists no model")
    for m in config.model_config_list.config:
        if not m.name:
            raise ConfigError(f"{source}: a model has no name")
        policy = m.model_version_policy
        if policy.WhichOneof("policy_choice") == "specific":
            if not policy.specific.versions:
                raise ConfigError(f"{source}: model {m.name!r}: model_version_policy specific lists no version")
            pinned = set(policy.specific.versions)
            for label, version in m.version_labels.items():
                if version not in pinned:
                    raise ConfigError(f"{source}: model {m.name!r}: label {label!r} points at version {version}, "
                                      f"which the policy does not serve ({sorted(pinned)})")
    return config


def model(config, name=MODEL):
    """The ModelConfig of model `name` (a reference: changing it changes `config`)."""
    for m in config.model_config_list.config:
        if m.name == name:
            return m
    raise ConfigError(f"the model config has no model {name!r}; it has "
                      f"{', '.join(repr(m.name) for m in config.model_config_list.config)}")


def version_policy(m):
    """("specific", sorted versions), ("all", None) or ("latest", N), as TensorFlow Serving reads
    model_version_policy (none given: the newest one)."""
    policy = m.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "specific":
        return "specific", sorted(policy.specific.versions)
    if choice == "all":
        return "all", None
    return "latest", (policy.latest.num_versions if choice == "latest" else 0) or 1


def served_versions(m):
    """The versions a `specific` policy pins, or None when the server picks them (latest, all)."""
    kind, versions = version_policy(m)
    return versions if kind == "specific" else None


def describe(m):
    """One line: name, base path, versions served and labels."""
    kind, value = version_policy(m)
    if kind == "specific":
        which = "versions " + ", ".join(map(str, value))
    elif kind == "all":
        which = "every version"
    else:
        which = "the newest version" if value == 1 else f"the {value} newest versions"
    labels = ", ".join(f"{k} -> {v}" for k, v in sorted(m.version_labels.items(), key=lambda kv: (kv[1], kv[0])))
    return f"model {m.name} ({m.base_path}): serves {which}; labels: {labels or 'none'}"


# ---------------------------------------------------------------- the moves of an A/B rollout
# TensorFlow Serving moves a label only onto a version it has loaded (AVAILABLE):
# a config that moves one to any other version is refused as a whole
# ("Request to assign label to version N ... not currently available"), and
# the server keeps serving the previous one (with
# --allow_version_labels_for_unavailable_models, server_core.cc, a new label may
# name a version not loaded yet; moving one may not). So a new version is loaded first
# (`load`), and labelled once the server has it (`canary`, `promote`).

def check_version(version, flag="--version"):
    if not 0 < version <= MAX_VERSION:
        raise UsageError(f"{flag} must be a version number (a positive integer), not {version}")
    return version


def pin(m, versions):
    m.model_version_policy.Clear()
    m.model_version_policy.specific.versions.extend(sorted(set(versions)))


def load(config, version, loaded=None, name=MODEL):
    """Also serve `version`, labels unchanged.

    A policy that lets the server choose is pinned to what it has `loaded`.
    """
    m = model(config, name)
    pinned = served_versions(m)
    if pinned is None:
        if loaded is None:
            raise UsageError(f"model {name!r} serves what the server finds ({describe(m).split(': ', 1)[1]}); "
                             "give --server URL so that the versions it has loaded stay loaded")
        pinned = loaded
    pin(m, [*pinned, check_version(version)])
    return check(config)


def split(config, stable, canary, loaded=None, name=MODEL):
    """Serve exactly versions `stable` and `canary` under those labels (one version may carry both)."""
    m = model(config, name)
    check_version(stable, "--stable")
    check_version(canary, "--canary")
    pinned = served_versions(m)
    for label, version in ((STABLE, stable), (CANARY, canary)):
        if (pinned is not None and version not in pinned) or (loaded is not None and version not in loaded):
            raise ConfigError(f"version {version} is not loaded, so it cannot be labelled {label} yet: load it first "
                              f"(model_config.py load --version {version}) and wait until the server has it")
    pin(m, [stable, canary])
    m.version_labels.clear()
    m.version_labels[STABLE] = stable
    m.version_labels[CANARY] = canary
    return check(config)


def serve_export(config, base_path, name=MODEL):
    """Serve the export directory `base_path` instead, as kube/model-config.yaml serves its own (its version
    policy: the newest versions there); labels go, since they name versions of the directory served before."""
    m = model(config, name)
    _, default = read_configmap(CONFIGMAP_SOURCE.read_text(), str(CONFIGMAP_SOURCE))
    m.base_path = str(base_path)
    m.model_version_policy.CopyFrom(model(default).model_version_policy)
    m.version_labels.clear()
    return check(config)


def promote(config, name=MODEL):
    """Point `stable` at the canary's version. Both stay loaded, so moving `stable` back is a rollback."""
    m = model(config, name)
    if CANARY not in m.version_labels:
        raise ConfigError(f"model {name!r} has no {CANARY!r} label to promote; start a rollout first "
                          "(model_config.py canary)")
    previous = m.version_labels.get(STABLE)
    m.version_labels[STABLE] = m.version_labels[CANARY]
    return check(config), previous, m.version_labels[STABLE]


# ---------------------------------------------------------------- what a server has loaded (REST API)

def get_json(url, timeout):
    """GET a model server's REST API: (HTTP status, JSON body); (None, reason) while nothing answers."""
    try:
        return rest.call(url, timeout=timeout)
    except rest.UnreachableError as err:
        return None, {"error": str(err)}
    except (rest.NotHttpError, rest.NotJsonError):
        return None, {"error": "it does not answer TensorFlow Serving's REST API there"}


def available_versions(server, name=MODEL, timeout=10.0):
    """The versions a model server reports AVAILABLE (GET /v1/models/<name>), ascending."""
    code, body = get_json(f"{server.rstrip('/')}/v1/models/{name}", timeout)
    if code is None:
        raise UserError(f"cannot reach a model server at {server}: {body['error']}")
    if code != 200:
        error = body.get("error", "") if isinstance(body, dict) else ""
        raise UserError(f"{server} has no model {name!r}: HTTP {code}: {short(error)}")
    try:
        return sorted(int(v["version"]) for v in body.get("model_version_status", []) if v.get("state") == "AVAILABLE")
    except (AttributeError, KeyError, TypeError, ValueError):
        raise not_serving(server, f"/v1/models/{name}", body) from None


def short(value, limit=120):
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit] + "..."


def not_serving(server, path, body):
    """A server answer of the wrong shape: one line quoting (the start of) it."""
    return UserError(f"{server} answered GET {path} with {short(body)!r}, not TensorFlow Serving's answer: is it a "
                     "model server's REST address?")


def label_version(server, name, label, timeout=10.0):
    """The version `label` resolves to on the server (its metadata answers for that version), or None."""
    path = f"/v1/models/{name}/labels/{label}/metadata"
    code, body = get_json(server.rstrip("/") + path, timeout)
    if code != 200:
        return None
    try:
        return int(body["model_spec"]["version"])
    except (KeyError, TypeError, ValueError):
        raise not_serving(server, path, body) from None


def wait(server, config, name=MODEL, timeout=300.0, every=15.0, out=sys.stdout):
    """Block until the server serves `config`: every pinned version AVAILABLE, every label on its version."""
    m = model(config, name)
    want_versions = served_versions(m) or []
    want_labels = dict(m.version_labels)
    started = time.monotonic()
    next_note = started + every
    while True:
        try:
            loaded = available_versions(server, name)
        except UserError:
            loaded = []
        missing = [v for v in want_versions if v not in loaded]
        wrong = {k: v for k, v in want_labels.items() if not missing and label_version(server, name, k) != v}
        if loaded and not missing and not wrong:
            print(f"{server} serves {name}: versions {', '.join(map(str, loaded))}; labels: "
                  f"{', '.join(f'{k} -> {v}' for k, v in sorted(want_labels.items())) or 'none'}", file=out, flush=True)
            return loaded
        now = time.monotonic()
        pending = (f"version {', '.join(map(str, missing))} to load" if missing
                   else f"labels {', '.join(f'{k} -> {v}' for k, v in sorted(wrong.items()))}" if wrong
                   else f"a version of {name}")
        if now - started > timeout:
            raise UserError(f"{server} did not serve the new model config within {timeout:.0f}s (still waiting for "
                            f"{pending}); check that {m.base_path}/<version> exists and read the server's log")
        if now >= next_note:
            print(f"  waiting for {pending} ({now - started:.0f}s)", file=out, flush=True)
            next_note += every
        time.sleep(1.0)


# ---------------------------------------------------------------- the ConfigMap that holds it on the cluster

def read_configmap(text, source="the ConfigMap"):
    """A ConfigMap (YAML, as kubectl prints it) -> (the object, its ModelServerConfig)."""
    docs = yamlfile.load_all(text, source, ConfigError)
    maps = [d for d in docs if isinstance(d, dict) and d.get("kind") == "ConfigMap"]
    if len(maps) != 1:
        raise ConfigError(f"{source} must hold exactly one ConfigMap, not {len(maps)}")
    (configmap,) = maps
    # The shapes the API server's ConfigMap schema allows (metadata an object, data a map of strings).
    for field, kind in (("metadata", dict), ("data", dict), ("binaryData", dict)):
        if configmap.get(field) is not None and not isinstance(configmap[field], kind):
            raise ConfigError(f"{source}: the ConfigMap's {field} must be a mapping, not {short(configmap[field])!r}")
    meta = configmap.get("metadata") or {}
    for field in ("annotations", "labels"):
        if meta.get(field) is not None and not isinstance(meta[field], dict):
            raise ConfigError(f"{source}: the ConfigMap's metadata.{field} must be a mapping, not "
                              f"{short(meta[field])!r}")
    data = configmap.get("data") or {}
    if CONFIGMAP_KEY not in data:
        raise ConfigError(f"ConfigMap {meta.get('name')!r} has no key {CONFIGMAP_KEY!r}")
    if not isinstance(data[CONFIGMAP_KEY], str):
        raise ConfigError(f"{source}: the ConfigMap's data.{CONFIGMAP_KEY} must be a string (the text protobuf), "
                          f"not {short(data[CONFIGMAP_KEY])!r}")
    return configmap, parse(data[CONFIGMAP_KEY], f"{source} ({CONFIGMAP_KEY})")


def configmap_with(configmap, config):
    """The ConfigMap holding `config`, ready for `kubectl apply`: the API server's bookkeeping removed.

    metadata.resourceVersion is kept: if someone changed the ConfigMap since it
    was read, the API server refuses the apply instead of losing their change.
    """
    out = copy.deepcopy(configmap)
    meta = out.setdefault("metadata", {})
    for field in SERVER_FIELDS:
        meta.pop(field, None)
    annotations = meta.get("annotations") or {}
    annotations.pop(LAST_APPLIED, None)
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    out.pop("status", None)
    out["data"] = {**(out.get("data") or {}), CONFIGMAP_KEY: dumps(config)}
    return out


# ---------------------------------------------------------------- command line

def parse_args(argv=None):
    p = ArgumentParser(description="Show or change the versions and labels of TensorFlow Serving's model config "
                                   "(a local file, or a ConfigMap piped through).")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    subs = {
        "init": actions.add_parser("init", help="write a new config file: kube/model-config.yaml's, for --base_path"),
        "show": actions.add_parser("show", help="print the versions a model serves and their labels"),
        "load": actions.add_parser("load", help="also serve --version N, labels unchanged (before labelling it)"),
        "canary": actions.add_parser("canary", help="serve two loaded versions, labelled stable and canary"),
        "promote": actions.add_parser("promote", help="point stable at the canary's version"),
        "serve": actions.add_parser("serve", help="serve the newest versions of --base_path instead (the policy "
                                                  "of kube/model-config.yaml), labels removed"),
        "wait": actions.add_parser("wait", help="wait until --server serves the config (versions loaded, labels set)"),
    }
    subs["load"].add_argument("--version", type=int, required=True, help="the version to load")
    subs["canary"].add_argument("--stable", type=int, help="the version labelled stable (default: the current "
                                                           "stable, else the older of the two newest on --server)")
    subs["canary"].add_argument("--canary", type=int, help="the version labelled canary (default: the newest "
                                                           "version --server has loaded)")
    subs["wait"].add_argument("--timeout", type=duration(), default=300.0, help="seconds to wait at most")
    subs["init"].add_argument("--config", metavar="FILE", required=True, help="the file to write (not overwritten)")
    subs["init"].add_argument("--base_path", required=True, help="the export directory to serve")
    subs["serve"].add_argument("--base_path", required=True, help="the export directory to serve, as TensorFlow "
                                                                  "Serving sees it (an absolute path)")
    for name, sub in subs.items():
        if name == "init":  # writes a new file: none to read
            continue
        where = sub.add_mutually_exclusive_group(required=True)
        where.add_argument("--config", metavar="FILE", help="a model config file" +
                           ("" if name in ("show", "wait") else ", changed in place"))
        where.add_argument("--configmap", metavar="FILE", help="a ConfigMap in YAML ('-': standard input)" +
                           ("" if name in ("show", "wait") else "; the changed ConfigMap goes to standard output"))
        sub.add_argument("--model", default=MODEL, help="which model of the config")
        if name not in ("show", "serve"):
            sub.add_argument("--server", metavar="URL", required=name == "wait",
                             help="a model server's REST address (e.g. http://localhost:8501): "
                                  + ("the server to wait for" if name == "wait" else "what it has loaded"))
    return p.parse_args(argv)


def load_source(args):
    """(the ConfigMap or None, the ModelServerConfig) from --config or --configmap."""
    if args.config:
        return None, read(args.config)
    source = "standard input" if args.configmap == "-" else args.configmap
    try:
        text = sys.stdin.read() if args.configmap == "-" else Path(args.configmap).read_text()
    except OSError as err:
        raise ConfigError(f"cannot read {source}: {err.strerror}") from None
    return read_configmap(text, source)


def canary_versions(args, m, loaded):
    """--stable and --canary, defaulting to the current stable label and to what the server has loaded."""
    stable = args.stable if args.stable is not None else m.version_labels.get(STABLE)
    canary = args.canary
    if canary is None or stable is None:
        if loaded is None:
            raise UsageError("give --canary VERSION (and --stable VERSION unless the config has a stable label), "
                             "or --server URL to take them from the versions the server has loaded")
        if canary is None:
            if not loaded:
                raise UserError(f"{args.server} has no version of {m.name!r} loaded")
            canary = loaded[-1]
        if stable is None:
            older = [v for v in loaded if v < canary]
            if not older:
                raise UserError(f"{args.server} has only version {canary} of {m.name!r} loaded: export a new "
                                "version, wait until it is loaded, then start the canary")
            stable = older[-1]
    return stable, canary


def init(path, base_path):
    """A new config file at `path`: the ConfigMap's as kube/model-config.yaml writes it, serving `base_path`."""
    path, base_path = Path(path), Path(base_path).resolve()
    if path.exists():
        raise UserError(f"{path} exists: edit it with the other actions, or delete it to start again")
    if not base_path.is_dir():
        raise UsageError(f"--base_path {base_path} is not a directory")
    _, config = read_configmap(CONFIGMAP_SOURCE.read_text(), str(CONFIGMAP_SOURCE))
    serve_export(config, base_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path, config)
    return model(config)


@entry_point
def main(argv=None):
    args = parse_args(argv)
    if args.action == "init":
        print(f"{args.config}: {describe(init(args.config, args.base_path))}")
        return
    configmap, config = load_source(args)
    m = model(config, args.model)
    if args.action == "show":
        print(describe(m))
        return
    if args.action == "wait":
        wait(args.server, config, args.model, args.timeout)
        return
    loaded = available_versions(args.server, args.model) if getattr(args, "server", None) else None
    if args.action == "serve":
        message = describe(model(serve_export(config, args.base_path, args.model), args.model))
    elif args.action == "load":
        load(config, args.version, loaded, args.model)
        message = f"loads version {args.version} too"
    elif args.action == "canary":
        stable, canary = canary_versions(args, m, loaded)
        split(config, stable, canary, loaded, args.model)
        message = f"{STABLE} -> {stable}, {CANARY} -> {canary}"
    else:
        _, before, after = promote(config, args.model)
        message = f"promoted: {STABLE} {before if before is not None else '(none)'} -> {after}"
    if configmap is None:
        write(args.config, config)
        print(f"{args.config}: {message}")
    else:
        print(yaml.safe_dump(configmap_with(configmap, config), sort_keys=False), end="")
        print(f"ConfigMap {configmap['metadata']['name']}: {message}", file=sys.stderr)
