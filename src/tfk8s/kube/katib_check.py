"""Check a Katib Experiment (kubeflow.org/v1beta1, Katib v0.19) before it reaches a cluster.

Katib's CRDs carry no schema: the API server takes any Experiment, and Katib's
admission webhooks judge it. The mutating one fills in defaults (and silently
drops fields Katib does not know); the validating one applies the rules ported
here, in its order and with its messages (`field: Invalid value: ...: detail`,
as the API server prints them). Some mistakes pass admission and only fail
later, in the suggestion service (an algorithm's settings, a grid smaller than
maxTrialCount): those are checked too, as are the fields Katib would drop,
and the trial itself: a trial's TFJob, with its parameters substituted as Katib's
manifest generator substitutes them, goes through tfjob_check.

    python src/katib_check.py experiment.yaml

Sources: Katib v0.19.0, pkg/apis/controller/experiments/v1beta1/experiment_defaults.go,
pkg/webhook/v1beta1/experiment/validator/validator.go, the suggestion services'
ValidateAlgorithmSettings (optuna grid, hyperopt random, skopt bayesianoptimization),
earlystopping medianstop, and the katib-standalone katib-config.yaml. This module is
over 450 lines for a reason: it is one upstream validator, kept in one file to read beside it.
"""
import copy
import itertools
import json
import posixpath
import re
import sys

import jsonschema
import numpy as np

from tfk8s import yamlfile
from tfk8s.cli import ArgumentParser, entry_point
from tfk8s.kube import tfjob_check

API_VERSION, KIND = "kubeflow.org/v1beta1", "Experiment"
# What the katib-standalone install's katib-config.yaml (v0.19.0) offers.
STANDALONE = {
    "suggestions": ("random", "tpe", "grid", "hyperband", "bayesianoptimization", "cmaes", "sobol",
                    "multivariate-tpe", "enas", "darts", "pbt"),
    "early_stoppings": ("medianstop",),
    "collectors": ("StdOut", "File", "TensorFlowEvent"),
}
NAMESPACE_LABEL = ("katib.kubeflow.org/metrics-collector-injection", "enabled")
KUBEFLOW_JOBS = ("TFJob", "PyTorchJob", "XGBoostJob", "MPIJob")
SUCCEEDED = 'status.conditions.#(type=="Succeeded")#|#(status=="True")#'
FAILED = 'status.conditions.#(type=="Failed")#|#(status=="True")#'
JOB_SUCCEEDED = 'status.conditions.#(type=="Complete")#|#(status=="True")#'
PRIMARY_POD_LABELS = {"training.kubeflow.org/job-role": "master"}
TFEVENT_DIR, METRICS_FILE = "/var/log/katib/tfevent/", "/var/log/katib/metrics.log"
AUTO_INJECTED = ("StdOut", "TensorFlowEvent", "File", "PrometheusMetric")
PARAMETER_TYPES = ("int", "double", "categorical", "discrete", "unknown")
DISTRIBUTIONS = ("uniform", "logUniform", "normal", "logNormal", "unknown")
RESUME_POLICIES = ("", "Never", "LongRunning", "FromVolume")
META_KEYS = ("Name", "Namespace", "Kind", "APIVersion", "Annotations", "Labels")
STRATEGIES = ("min", "max", "latest")
PLACEHOLDER = re.compile(r"\$\{trialParameters\..+?\}")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
SUBDOMAIN_MESSAGE = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                     "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                     "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
NAME_MESSAGE = ("name must consist of lower case alphanumeric characters or '-', start with an alphabetic "
                "character, and end with an alphanumeric character (e.g. 'my-name', or 'abc-123', regex used for "
                "validation is '^[a-z]([-a-z0-9]*[a-z0-9])?)') and may not be longer than 40 characters. ")


def workshop_config():
    """What the katib-config `make instructor-katib` installs offers (templated/instructor/katib-config.yaml.j2):
    Katib's webhook reads the installed one on every request (v0.19.0 validator.go, GetSuggestionConfigData)."""
    from tfk8s.kube import cluster_model  # which imports this module
    runtime = cluster_model.katib_config()["runtime"]
    return {"suggestions": tuple(s["algorithmName"] for s in runtime.get("suggestions") or []),
            "early_stoppings": tuple(e["algorithmName"] for e in runtime.get("earlyStoppings") or []),
            "collectors": tuple(c["kind"] for c in runtime.get("metricsCollectors") or [])}


# ---------------------------------------------------------------- errors as the API server prints them

def go_value(value):
    """A bad value as field.Invalid prints it: strings quoted, numbers plain, anything else as JSON."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def invalid(path, value, detail):
    return f"{path}: Invalid value: {go_value(value)}: {detail}"


def required(path, detail):
    return f"{path}: Required value: {detail}"


def go_struct(item, fields):
    """A Go struct printed with %v: its fields' values in order, space-separated, in braces."""
    return "{" + " ".join(str(item.get(f, "")) for f in fields) + "}"


def go_list(items, fields):
    return "[" + " ".join(go_struct(i, fields) for i in items) + "]"


# ---------------------------------------------------------------- fields Katib knows (others it drops)

STR, INT, FLOAT, BOOL, ANY = "string", "integer", "number", "boolean", "any"
SETTINGS = [{"name": STR, "value": STR}]
PARAMETER = {"name": STR, "parameterType": STR,
             "feasibleSpace": {"max": STR, "min": STR, "list": [STR], "step": STR, "distribution": STR}}
SPEC = {
    "parameters": [PARAMETER],
    "objective": {"type": STR, "goal": FLOAT, "objectiveMetricName": STR, "additionalMetricNames": [STR],
                  "metricStrategies": [{"name": STR, "value": STR}]},
    "algorithm": {"algorithmName": STR, "algorithmSettings": SETTINGS},
    "earlyStopping": {"algorithmName": STR, "algorithmSettings": SETTINGS},
    "trialTemplate": {"retain": BOOL, "trialSpec": ANY, "trialParameters": [{"name": STR, "description": STR,
                                                                             "reference": STR}],
                      "configMap": {"configMapName": STR, "configMapNamespace": STR, "templatePath": STR},
                      "primaryPodLabels": {"*": STR}, "primaryContainerName": STR, "successCondition": STR,
                      "failureCondition": STR},
    "parallelTrialCount": INT, "maxTrialCount": INT, "maxFailedTrialCount": INT,
    "metricsCollectorSpec": {"source": {"httpGet": ANY, "fileSystemPath": {"path": STR, "kind": STR, "format": STR},
                                        "filter": {"metricsFormat": [STR]}},
                             "collector": {"kind": STR, "customCollector": ANY}},
    "nasConfig": ANY, "resumePolicy": STR,
}
PYTHON_TYPES = {STR: (str,), INT: (int,), FLOAT: (int, float), BOOL: (bool,)}


def structure_problems(node, schema, path):
    """Fields Katib would drop without a word, and values of the wrong type (its decoder would refuse them)."""
    if schema == ANY or node is None:
        return []
    if isinstance(schema, list):
        if not isinstance(node, list):
            return [f"{path}: must be a list, not {go_value(node)}"]
        return [p for i, item in enumerate(node) for p in structure_problems(item, schema[0], f"{path}[{i}]")]
    if isinstance(schema, dict):
        if not isinstance(node, dict):
            return [f"{path}: must be a mapping, not {go_value(node)}"]
        if "*" in schema:
            return [p for key, value in node.items() for p in structure_problems(value, schema["*"], f"{path}.{key}")]
        found = [f'{path}: unknown field "{key}" (Katib v0.19 would drop it)' for key in node if key not in schema]
        return found + [p for key, value in node.items() if key in schema
                        for p in structure_problems(value, schema[key], f"{path}.{key}")]
    wanted = PYTHON_TYPES[schema]
    if not isinstance(node, wanted) or (schema != BOOL and isinstance(node, bool)):
        return [f"{path}: must be a {schema}, not {go_value(node)}"]
    return []


# ---------------------------------------------------------------- defaults (the mutating webhook)

def defaults(doc):
    """The Experiment as Katib's mutating webhook leaves it (Experiment.SetDefault), a copy."""
    doc = copy.deepcopy(doc)
    spec = doc.setdefault("spec", {})
    spec.setdefault("parallelTrialCount", 3)
    if not spec.get("resumePolicy"):
        spec["resumePolicy"] = "Never"
    objective = spec.get("objective")
    if objective is not None:
        strategy = {"minimize": "min", "maximize": "max"}.get(objective.get("type"), "latest")
        strategies = objective.setdefault("metricStrategies", [])
        for name in [objective.get("objectiveMetricName", "")] + list(objective.get("additionalMetricNames") or []):
            if not any(s.get("name") == name for s in strategies):
                strategies.append({"name": name, "value": strategy})
    template = spec.get("trialTemplate")
    if template and template.get("trialSpec"):
        kind = template["trialSpec"].get("kind")
        if kind == "Job":
            template["successCondition"] = template.get("successCondition") or JOB_SUCCEEDED
            template["failureCondition"] = template.get("failureCondition") or FAILED
        elif kind in KUBEFLOW_JOBS:
            template["successCondition"] = template.get("successCondition") or SUCCEEDED
            template["failureCondition"] = template.get("failureCondition") or FAILED
            if not template.get("primaryPodLabels"):
                template["primaryPodLabels"] = dict(PRIMARY_POD_LABELS)
    collector_spec = spec.setdefault("metricsCollectorSpec", {}) or {}
    spec["metricsCollectorSpec"] = collector_spec
    collector = collector_spec.setdefault("collector", {"kind": "StdOut"}) or {"kind": "StdOut"}
    collector_spec["collector"] = collector
    kind = collector.get("kind")
    if kind == "PrometheusMetric":
        http = collector_spec.setdefault("source", {}).setdefault("httpGet", {})
        http.setdefault("path", "/metrics")
        if str(http.get("port", 0)) == "0":
            http["port"] = 8080
    elif kind in ("File", "TensorFlowEvent"):
        path = collector_spec.setdefault("source", {}).setdefault("fileSystemPath", {})
        if kind == "File":
            path["kind"] = path.get("kind") or "File"
            path["path"] = path.get("path") or METRICS_FILE
            path["format"] = path.get("format") or "TEXT"
        else:
            path["kind"] = path.get("kind") or "Directory"
            path["path"] = path.get("path") or TFEVENT_DIR
    for parameter in spec.get("parameters") or []:
        space = parameter.setdefault("feasibleSpace", {})
        if not space.get("distribution"):
            space["distribution"] = "uniform"
    return doc


# ---------------------------------------------------------------- the validating webhook

def objective_problems(objective):
    path = "spec.objective"
    if objective is None:
        return [required(path, "must be specified")]
    found = []
    if objective.get("type") not in ("minimize", "maximize"):
        found.append(invalid(f"{path}.type", objective.get("type", ""), "must be minimize or maximize"))
    if not objective.get("objectiveMetricName"):
        found.append(required(f"{path}.objectiveMetricName", "must be specified"))
    if objective.get("objectiveMetricName", "") in (objective.get("additionalMetricNames") or []):
        found.append(invalid(f"{path}.additionalMetricNames", objective["additionalMetricNames"],
                             "should not contain spec.objective.objectiveMetricName"))
    return found


def named_in_config(path, name, known, what, lookup):
    """Katib's check of an algorithm's name against katib-config (it reads the ConfigMap on every request)."""
    found = [] if name else [required(f"{path}.algorithmName", "must be specified")]
    if name not in known:
        found.append(invalid(f"{path}.algorithmName", name, f"unable to get {what} config data for algorithm {name}: "
                                                            f"failed to find {lookup} config for algorithm: {name} in "
                                                            "ConfigMap: katib-config"))
    return found


def config_problems(spec, config):
    found = []
    if spec.get("algorithm") is None:
        found.append(required("spec.algorithm", "must be specified"))
    else:
        found += named_in_config("spec.algorithm", spec["algorithm"].get("algorithmName", ""), config["suggestions"],
                                 "Suggestion", "suggestion")
    if spec.get("earlyStopping") is not None:
        found += named_in_config("spec.earlyStopping", spec["earlyStopping"].get("algorithmName", ""),
                                 config["early_stoppings"], "EarlyStopping", "early stopping")
    if spec.get("resumePolicy", "") not in RESUME_POLICIES:
        found.append(invalid("spec.resumePolicy", spec["resumePolicy"], "invalid ResumePolicyType"))
    return found


def placeholder(name):
    """Where a trial parameter's value goes in the trial template."""
    return "${trialParameters." + name + "}"


def meta_reference(reference):
    """A ${trialSpec.X} or ${trialSpec.X[k]} reference as (X, k), k "" without one (Go's zero value); None for a
    reference to a parameter (consts.go TrialTemplateMetaReplaceFormatRegex, TrialTemplateMetaParseFormatRegex)."""
    match = re.search(r"\$\{trialSpec\.(.+?)\}", reference)
    if not match:
        return None
    indexed = re.search(r"(.+)\[(.+)]", match[1])
    return (indexed[1], indexed[2]) if indexed else (match[1], "")


def is_meta_key(reference):
    parsed = meta_reference(reference)
    return parsed is not None and parsed[0] in META_KEYS


def template_text(template):
    """The trial template as the webhook reads it: an inline trialSpec as JSON (Go's encoder sorts keys)."""
    return json.dumps(template["trialSpec"], sort_keys=True, separators=(",", ":"))


def trial_template_problems(spec):
    path = "spec.trialTemplate"
    template = spec.get("trialTemplate")
    if template is None:
        return [required(path, "must be specified")]
    found = []
    if not template.get("primaryContainerName"):
        found.append(required(f"{path}.primaryContainerName", "must be specified"))
    if not template.get("successCondition") or not template.get("failureCondition"):
        found.append(required(path, "successCondition and failureCondition must be specified"))
    parameters = template.get("trialParameters")
    if not parameters:  # an empty list is dropped on the way through the defaulting webhook: nil
        return found + [required(f"{path}.trialParameters", "must be specified")]
    if not template.get("trialSpec") and not template.get("configMap"):
        return found + [required(f"{path}.TrialSource", "spec.trialTemplate.trialSpec or "
                                                        "spec.trialTemplate.configMap must be specified")]
    if template.get("trialSpec") and template.get("configMap"):
        return found + [required(path, "only one of spec.trialTemplate.trialSpec or spec.trialTemplate.configMap "
                                       "can be specified")]
    if template.get("configMap"):
        source = template["configMap"]
        if not all(source.get(k) for k in ("configMapName", "configMapNamespace", "templatePath")):
            return found + [required(f"{path}.configMap", "configMapName, configMapNamespace and templatePath "
                                                           "must be specified")]
        return found  # the ConfigMap lives on the cluster: the webhook reads it there
    text = template_text(template)
    fields = ("name", "description", "reference")
    names, references = set(), set()
    experiment_parameters = {p.get("name") for p in spec.get("parameters") or []}
    for i, parameter in enumerate(parameters):
        name, reference = parameter.get("name", ""), parameter.get("reference", "")
        at = f"{path}.trialParameters[{i}]"
        if not name or not reference or "{" in name or "}" in name:
            found.append(invalid(at, "", "name and reference must be specified and name must not contain '{' "
                                         "or '}'"))
            continue
        if name in names:
            found.append(invalid(f"{at}.name", name, f"parameter name {name} can't be duplicated in spec.trialTemplate"
                                                      f".trialParameters: {go_list(parameters, fields)}"))
            continue
        if reference in references:
            found.append(invalid(f"{at}.reference", reference, f"parameter reference {reference} can't be duplicated "
                                 f"in spec.trialTemplate.trialParameters: {go_list(parameters, fields)}"))
            continue
        names.add(name)
        references.add(reference)
        if experiment_parameters and not is_meta_key(reference) and reference not in experiment_parameters:
            listed = go_list([{**p, "feasibleSpace": json.dumps(p.get("feasibleSpace", {}))}
                              for p in spec.get("parameters") or []], ("name", "parameterType", "feasibleSpace"))
            found.append(invalid(f"{at}.reference", reference,
                                 f"parameter reference {reference} does not exist in spec.parameters: {listed}"))
        token = placeholder(name)
        if token not in text:
            return found + [invalid(f"{at}.name", name, f"parameter name: {name} in spec.trialParameters not found "
                                                         f"in spec.trialTemplate: {text}")]
        text = text.replace(token, "test-value")
    leftover = PLACEHOLDER.findall(text)
    if leftover:
        found.append(invalid(path, "", f"parameters: [{' '.join(leftover)}] in spec.trialTemplate not found in "
                                       f"spec.trialParameters: {go_list(parameters, fields)}"))
    try:
        run_spec = json.loads(text)
    except ValueError:
        return found + [invalid(path, "", f"unable to convert spec.trialTemplate: {text} to unstructured")]
    metadata = run_spec.get("metadata") or {}
    if metadata.get("name") or metadata.get("namespace"):
        found.append(invalid(path, "", "metadata.name and metadata.namespace in spec.trialTemplate must be omitted"))
    if not run_spec.get("apiVersion") or not run_spec.get("kind"):
        found.append(required(path, "APIVersion and Kind in spec.trialTemplate must be specified"))
    return found  # only a batch/v1 Job is checked further by Katib; a TFJob by the operator (trial_problems)


def parameter_problems(parameters):
    found = []
    for i, parameter in enumerate(parameters):
        at, kind = f"spec.parameters[{i}]", parameter.get("parameterType", "")
        space = parameter.get("feasibleSpace") or {}
        if kind not in PARAMETER_TYPES:
            found.append(invalid(f"{at}.parameterType", kind, f"parameterType: {kind} is not supported"))
        if space.get("distribution") and space["distribution"] not in DISTRIBUTIONS:
            found.append(invalid(f"{at}.feasibleSpace.distribution", space["distribution"],
                                 f"distribution: {space['distribution']} is not supported"))
        if not any(space.get(k) for k in ("max", "min", "list", "step", "distribution")):
            found.append(required(f"{at}.feasibleSpace", "feasibleSpace must be specified"))
        elif kind in ("double", "int"):
            if space.get("list"):
                found.append(invalid(f"{at}.feasibleSpace.list", space["list"],
                                     f"feasibleSpace.list is not supported for parameterType: {kind}"))
            if not space.get("max") or not space.get("min"):
                found.append(required(f"{at}.feasibleSpace.max", "feasibleSpace.max or feasibleSpace.min must be "
                                                                  f"specified for parameterType: {kind}"))
        elif kind in ("categorical", "discrete") and any(space.get(k) for k in ("max", "min", "step")):
            found.append(invalid(f"{at}.feasibleSpace", space, "feasibleSpace .max, .min and .step is not supported "
                                                               f"for parameterType: {kind}"))
    return found


def collector_problems(spec, config):
    path, source_path = "spec.metricsCollectorSpec", "spec.metricsCollectorSpec.source"
    collector_spec = spec.get("metricsCollectorSpec") or {}
    kind = (collector_spec.get("collector") or {}).get("kind", "")
    source = collector_spec.get("source") or {}
    files = source.get("fileSystemPath")
    found = []
    if kind in AUTO_INJECTED and kind not in config["collectors"]:
        found.append(invalid(f"{path}.collector.kind", kind, "GetMetricsCollectorConfigData failed: failed to find "
                                                             f"metrics collector config for kind: {kind} in ConfigMap: "
                                                             "katib-config"))
    if kind == "File":
        if not files or files.get("kind") != "File" or not posixpath.isabs(files.get("path", "")):
            found.append(required(f"{source_path}.fileSystemPath.path", "file path where metrics file exists is "
                                                                        "required"))
        fmt = (files or {}).get("format", "")
        if fmt not in ("TEXT", "JSON"):
            found.append(required(f"{source_path}.fileSystemPath.format", "format of metrics file is required for "
                                                                          "metrics collector"))
        if fmt == "JSON" and source.get("filter") is not None:
            found.append(invalid(f"{source_path}.filter", "", "filter must be nil when format of metrics file is json"))
    elif kind == "TensorFlowEvent":
        if not files or files.get("kind") != "Directory" or not posixpath.isabs(files.get("path", "")):
            found.append(required(source_path, "directory path where tensorflow event files exist is required by "
                                               ".spec.metricsCollectorSpec.source.fileSystemPath.path"))
        if (files or {}).get("format"):
            found.append(invalid(f"{source_path}.fileSystemPath.format", files["format"], "must be empty"))
    elif kind == "PrometheusMetric":
        http = source.get("httpGet") or {}
        port = str(http.get("port", ""))
        if not port.isdigit() or int(port) <= 0:
            found.append(invalid(f"{source_path}.httpGet.port", port,
                                 "must be a positive integer value for metrics collector kind: PrometheusMetric"))
        if not str(http.get("path", "")).startswith("/"):
            found.append(invalid(f"{source_path}.httpGet.path", http.get("path", ""),
                                 "path is invalid for metrics collector kind: PrometheusMetric"))
    elif kind == "Custom":
        if (collector_spec.get("collector") or {}).get("customCollector") is None:
            found.append(required(f"{path}.collector.customCollector", "metrics collector kind: Custom is required"))
        if files is not None and (not posixpath.isabs(files.get("path", ""))
                                  or files.get("kind") not in ("Directory", "File")):
            found.append(invalid(f"{source_path}.fileSystemPath", "", ".spec.metricsCollectorSpec.source is invalid"))
    elif kind not in ("Push", "StdOut"):
        found.append(invalid(f"{path}.collector.kind", kind, f"invalid metrics collector kind: {kind}"))
    for fmt in (source.get("filter") or {}).get("metricsFormat") or []:
        try:
            re.compile(fmt)
        except re.error as err:
            found.append(invalid(f"{source_path}.filter.metricsFormat", fmt, f"invalid filter: {err}"))
            continue
        if not re.match(r".*\(.*\).*\(.*\).*", fmt):
            found.append(invalid(f"{source_path}.filter.metricsFormat", fmt, "two top subexpressions are required"))
    return found


def webhook_problems(doc, config=STANDALONE):
    """Katib's ValidateExperiment on a create, in its order (an objective error stops it, as it does Katib)."""
    found = []
    name = (doc.get("metadata") or {}).get("name", "")
    if not re.match(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 40:
        found.append(invalid("metadata.name", name, NAME_MESSAGE))
    spec = doc.get("spec") or {}
    counts = {k: spec.get(k) for k in ("maxFailedTrialCount", "maxTrialCount", "parallelTrialCount")}
    failed, most, parallel = counts["maxFailedTrialCount"], counts["maxTrialCount"], counts["parallelTrialCount"]
    if failed is not None and failed < 0:
        found.append(invalid("spec.maxFailedTrialCount", failed, "should not be less than 0"))
    if most is not None and most <= 0:
        found.append(invalid("spec.maxTrialCount", most, "must be greater than 0"))
    if parallel is not None and parallel <= 0:
        found.append(invalid("spec.parallelTrialCount", parallel, "must be greater than 0"))
    if failed is not None and most is not None and failed > most:
        found.append(invalid("spec.maxFailedTrialCount", failed, "should be less than or equal to spec.maxTrialCount"))
    if parallel is not None and most is not None and parallel > most:
        found.append(invalid("spec.parallelTrialCount", parallel, "should be less than or equal to spec.maxTrialCount"))
    objective = objective_problems(spec.get("objective"))
    if objective:
        return found + objective
    found += config_problems(spec, config)
    found += trial_template_problems(spec)
    parameters = spec.get("parameters") or []
    if not parameters and spec.get("nasConfig") is None:
        found.append(required("spec", "spec.parameters or spec.nasConfig must be specified"))
    if parameters and spec.get("nasConfig") is not None:
        found.append(invalid("spec", "", "only one of spec.parameters and spec.nasConfig can be specified"))
    found += parameter_problems(parameters)
    return found + collector_problems(spec, config)


def namespace_problems(doc, labels):
    """The validating webhook's first question: may experiments run in this namespace (its labels)?"""
    key, value = NAMESPACE_LABEL
    if labels.get(key) == value:
        return []
    meta = doc.get("metadata") or {}
    return [f'Cannot create the Experiment "{meta.get("name")}" in namespace "{meta.get("namespace")}": the namespace '
            f'lacks label "{key}: {value}"']


# ---------------------------------------------------------------- after admission: the suggestion services

def search_space(parameters):
    """The grid's values per parameter, as Katib's HyperParameterSearchSpace.convert_to_combinations lists them."""
    axes = {}
    for p in parameters:
        space, kind = p.get("feasibleSpace") or {}, p.get("parameterType")
        if kind == "int":
            axes[p["name"]] = [str(v) for v in range(int(space["min"]), int(space["max"]) + 1,
                                                     int(space.get("step") or 1))]
        elif kind == "double":
            if not space.get("step"):
                raise ValueError(f"Param {p['name']} step is nil; For discrete search space, all parameters must "
                                 "include step")
            values = np.arange(float(space["min"]), float(space["max"]) + float(space["step"]), float(space["step"]))
            if values[-1] > float(space["max"]):
                values = values[:-1]
            axes[p["name"]] = [str(v) for v in values]
        else:
            axes[p["name"]] = list(space.get("list") or [])
    return axes


def grid_combinations(doc):
    """Every assignment Katib's grid (Optuna's GridSampler) may try, in order ({parameter: value})."""
    axes = search_space((doc.get("spec") or {}).get("parameters") or [])
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


def check_setting(name, value, rules, algorithm):
    """Run one setting through a suggestion service's rules: its message, or None."""
    if name not in rules:
        return f"unknown setting {name} for algorithm {algorithm}"
    try:
        return rules[name](value)
    except (TypeError, ValueError) as err:
        return f"failed to validate {name}({value}): {err}"


def at_least(low, message):
    return lambda value: None if int(value) >= low else message


def one_of(choices, message):
    return lambda value: None if value in choices else message.format(value)


SETTING_RULES = {
    "grid": {"random_state": at_least(0, "")},
    "random": {"random_state": at_least(0, "random_state should be great or equal than zero")},
    "bayesianoptimization": {
        "base_estimator": one_of(("GP", "RF", "ET", "GBRT"), "base_estimator {} is not supported in Bayesian "
                                                             "optimization"),
        "n_initial_points": at_least(0, "n_initial_points should be great or equal than zero"),
        "acq_func": one_of(("gp_hedge", "LCB", "EI", "PI", "EIps", "PIps"), "acq_func {} is not supported in "
                                                                             "Bayesian optimization"),
        "acq_optimizer": one_of(("auto", "sampling", "lbfgs"), "acq_optimizer {} is not supported in Bayesian "
                                                               "optimization"),
        "random_state": at_least(0, "random_state should be great or equal than zero")},
    "medianstop": {"min_trials_required": at_least(1, "min_trials_required must be greater than zero (>0)"),
                   "start_step": at_least(1, "start_step must be greater or equal than one (>=1)")},
}


def settings_problems(doc):
    """What the suggestion and early-stopping services would refuse after admission (the Experiment then fails)."""
    spec = doc.get("spec") or {}
    algorithm = (spec.get("algorithm") or {}).get("algorithmName")
    found = []
    prefix = "the suggestion service would fail it: ValidateAlgorithmSettings Error: "
    if algorithm in SETTING_RULES:
        for setting in spec["algorithm"].get("algorithmSettings") or []:
            message = check_setting(setting.get("name"), setting.get("value"), SETTING_RULES[algorithm], algorithm)
            if message is not None:
                found.append(f"spec.algorithm.algorithmSettings: {prefix}{message}")
                break
    if algorithm == "grid" and not found:
        try:
            size = len(grid_combinations(doc))
            if spec.get("maxTrialCount", 0) > size:
                found.append(f"spec.maxTrialCount: {prefix}Max Trial Count: {spec['maxTrialCount']} > all possible "
                             f"search combinations: {size}")
        except (ValueError, IndexError, KeyError) as err:
            found.append(f"spec.parameters: {prefix}failed to validate parameters: {err}")
    for p in spec.get("parameters") or []:
        space = p.get("feasibleSpace") or {}
        logarithmic = algorithm == "bayesianoptimization" or space.get("distribution") in ("logUniform", "logNormal")
        if p.get("parameterType") == "double" and logarithmic and float(space.get("min") or 0) <= 0:
            found.append(f"spec.parameters: the suggestion service would fail: {p.get('name')} is searched on a log "
                         "scale (bayesianoptimization's doubles always are), so its min must be above 0")
    early = spec.get("earlyStopping")
    if early and early.get("algorithmName") == "medianstop":
        for setting in early.get("algorithmSettings") or []:
            message = check_setting(setting.get("name"), setting.get("value"), SETTING_RULES["medianstop"],
                                    "medianstop")
            if message is not None:
                found.append(f"spec.earlyStopping.algorithmSettings: the early-stopping service would fail it: "
                             f"ValidateEarlyStoppingSettings Error: {message}")
                break
        if ((spec.get("metricsCollectorSpec") or {}).get("collector") or {}).get("kind") == "TensorFlowEvent":
            found.append("spec.earlyStopping: Katib v0.19's TensorFlowEvent collector takes no early-stopping rules "
                         "(its sidecar would exit on -stop-rule): use the File or StdOut collector")
    return found


def problems(doc, config=STANDALONE):
    """Everything Katib would refuse or drop in `doc`, one line each; [] when it would run."""
    if not isinstance(doc, dict) or doc.get("apiVersion") != API_VERSION or doc.get("kind") != KIND:
        kind = f"{doc.get('apiVersion')}/{doc.get('kind')}" if isinstance(doc, dict) else type(doc).__name__
        return [f"apiVersion/kind: an Experiment is {API_VERSION}/{KIND}, not {kind}"]
    metadata = doc.get("metadata")
    found = [f"metadata{'.' if line[:1] != '[' else ''}{line}" for error in
             jsonschema.Draft7Validator(tfjob_check.OBJECT_META).iter_errors(metadata if metadata is not None else {})
             for line in tfjob_check.describe(error)]
    name = (metadata or {}).get("name", "") if isinstance(metadata, dict) else ""
    if isinstance(name, str) and (len(name) > 253 or not DNS_SUBDOMAIN.fullmatch(name)):
        found.append(invalid("metadata.name", name, SUBDOMAIN_MESSAGE))  # the API server's rule for every object
    found += structure_problems(doc.get("spec"), SPEC, "spec")
    if any("unknown field" not in line for line in found):
        return found  # a value of the wrong type: Katib's decoder refuses the object before any rule
    defaulted = defaults(doc)
    return found + webhook_problems(defaulted, config) + settings_problems(defaulted)


# ---------------------------------------------------------------- a trial, as Katib makes it

class TrialSpecError(ValueError):
    """What Katib's controller says when it cannot make a trial's object from the template."""


def meta_value(reference, trial, namespace, trial_spec):
    """A ${trialSpec.X} reference's value for a trial (v0.19.0 manifest/generator.go GetRunSpecWithHyperParameters):
    Name, Namespace, Kind, APIVersion, or Labels[key] / Annotations[key] of the template's own metadata."""
    key, index = meta_reference(reference)
    metadata = trial_spec.get("metadata") or {}
    simple = {"Name": trial, "Namespace": namespace, "Kind": trial_spec.get("kind", ""),
              "APIVersion": trial_spec.get("apiVersion", "")}
    if key in simple:
        return simple[key]
    if key in ("Labels", "Annotations"):
        found = metadata.get(key.lower()) or {}
        if index not in found:
            raise TrialSpecError(f"illegal reference of trial metadata: {reference}; failed to fetch "
                                 f"{key[:-1]}: {index}")
        return found[index]
    raise TrialSpecError(f"illegal reference of trial metadata: {reference}")


def run_spec(doc, trial, namespace, assignments):
    """The object Katib creates for a trial: the template's JSON with ${trialParameters.x} replaced as text (as its
    manifest generator does), named after the trial, in the trial's namespace. TrialSpecError where Katib's
    controller could not make it."""
    template = doc["spec"]["trialTemplate"]
    text = template_text(template)
    for parameter in template["trialParameters"]:
        reference = parameter["reference"]
        if is_meta_key(reference):
            value = meta_value(reference, trial, namespace, template["trialSpec"])
        elif reference in assignments:
            value = assignments[reference]
        else:
            raise TrialSpecError("unable to find non-meta parameter from TrialParameters in ParameterAssignment: "
                             f"parameter: {reference}, parameter assignment: {assignments}")
        text = text.replace(placeholder(parameter["name"]), value)
    job = json.loads(text)
    job["metadata"] = {"name": trial, "namespace": namespace, **(job.get("metadata") or {})}
    return job


def mounts_overlap(a, b):
    a, b = a.rstrip("/") + "/", b.rstrip("/") + "/"
    return a.startswith(b) or b.startswith(a)


def trial_problems(doc, assignments, trial=None):
    """A trial's TFJob (parameters substituted) as the operator would judge it, and what Katib's pod webhook does
    to its primary pod: it needs the primary container in every replica, and mounts an emptyDir at the
    collector's path, which must not hide (or sit under) a volume the container mounts."""
    defaulted = defaults(doc)
    template, spec = defaulted["spec"]["trialTemplate"], defaulted["spec"]
    name, namespace = doc["metadata"].get("name", "x"), doc["metadata"].get("namespace", "default")
    try:
        job = run_spec(defaulted, trial or f"{name}-abcdefgh", namespace, assignments)
    except TrialSpecError as err:  # the webhook lets it through; the controller then makes no trial
        return [f"Katib's controller cannot make the trials: {err}"]
    found = [f"the trial's TFJob: {p}" for p in tfjob_check.problems(job)]
    if job.get("kind") != "TFJob":
        return found
    primary = template["primaryContainerName"]
    collector = spec["metricsCollectorSpec"]
    files = (collector.get("source") or {}).get("fileSystemPath") or {}
    mount = files.get("path", "")
    if files.get("kind") == "File":
        mount = posixpath.dirname(mount)
    for replica_type, replica in (job.get("spec", {}).get("tfReplicaSpecs") or {}).items():
        containers = tfjob_check.containers_of(replica)
        container = next((c for c in containers if c.get("name") == primary), None)
        if container is None:
            found.append(f"spec.trialTemplate.primaryContainerName: {replica_type} has no container {primary!r}: "
                         "Katib's pod webhook would refuse its pods")
            continue
        for volume_mount in container.get("volumeMounts", []):
            if mount and mounts_overlap(mount, volume_mount.get("mountPath", "")):
                found.append(f"spec.metricsCollectorSpec: the collector's emptyDir at {mount} overlaps the "
                             f"{primary} container's volume {volume_mount.get('name')} at "
                             f"{volume_mount.get('mountPath')} in {replica_type}: one would hide the other")
    return found


# ---------------------------------------------------------------- command line

def example_assignments(doc):
    """A value for each parameter that a trial may get: a range's low end, a list's first value."""
    return {p["name"]: (p["feasibleSpace"].get("min") or (p["feasibleSpace"].get("list") or [""])[0])
            for p in (doc.get("spec") or {}).get("parameters") or []}


@entry_point
def main(argv=None):
    parser = ArgumentParser(description="Check Katib Experiments offline, as Katib v0.19's webhook would (after its "
                                        "defaults), its suggestion services after it, and the training operator "
                                        "the trials' TFJobs.")
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.add_argument("--katib_config", choices=("workshop", "standalone"), default="workshop",
                        help="the katib-config Katib reads: the workshop's (what make instructor-katib installs: "
                             "its algorithms, no early stopping) or the stock katib-standalone one")
    args = parser.parse_args(argv)
    config = workshop_config() if args.katib_config == "workshop" else STANDALONE
    failed = False
    for path in args.files:
        for doc in yamlfile.documents(path, must_hold="a Katib Experiment"):
            found = problems(doc, config)
            if not found and (doc["spec"].get("trialTemplate") or {}).get("trialSpec"):
                found = trial_problems(doc, example_assignments(doc))
            for line in found:
                print(f"{path}: {line}", file=sys.stderr)
            if not found:
                spec = doc["spec"]
                print(f"{path}: Experiment {doc['metadata'].get('name')} is valid "
                      f"({spec['algorithm']['algorithmName']}, {len(spec['parameters'])} parameters, "
                      f"up to {spec.get('maxTrialCount', 'unlimited')} trials)")
            failed = failed or bool(found)
    if failed:
        sys.exit(1)
