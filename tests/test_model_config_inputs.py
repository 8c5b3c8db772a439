"""src/model_config.py given what it cannot use: a ConfigMap, a model config or a server answer of the wrong shape is
one line and a non-zero exit, for every subcommand that reads it (real processes, a real server on loopback)."""
import pytest

from support import REPO, FakeRest, assert_one_line_error, run_script

GOOD = 'model_config_list { config { name: "mnist" base_path: "/x" model_platform: "tensorflow" } }'
ACTIONS = [["show"], ["promote"], ["load", "--version", "3"], ["canary", "--stable", "1", "--canary", "2"],
           ["wait", "--server", "http://127.0.0.1:9", "--timeout", "1"]]


def configmap(data_text, metadata="{name: mnist-model-config}"):
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata: {metadata}\n{data_text}\n"


@pytest.mark.parametrize("action", ACTIONS, ids=[a[0] for a in ACTIONS])
@pytest.mark.parametrize("text, fragment", [
    ("[]", "must hold exactly one ConfigMap, not 0"),
    ("5", "must hold exactly one ConfigMap, not 0"),
    (configmap("data: 5"), "the ConfigMap's data must be a mapping, not '5'"),
    (configmap("data: {models.config: 5}"), "data.models.config must be a string (the text protobuf), not '5'"),
    (configmap("data: {models.config: [1, 2]}"), "data.models.config must be a string"),
    (configmap(f"data: {{models.config: '{GOOD}'}}", metadata="5"), "the ConfigMap's metadata must be a mapping"),
    (configmap(f"data: {{models.config: '{GOOD}'}}", metadata="{annotations: [a]}"), "metadata.annotations must be"),
    (configmap("data: {models.config: 'model_config_list { config { name: 5 } '}"), "is not a valid model config"),
    (configmap("data: {}"), "has no key 'models.config'"),
], ids=["list", "number", "data-number", "config-number", "config-list", "metadata-number", "annotations-list",
        "bad-protobuf", "no-key"])
def test_a_configmap_of_the_wrong_shape_is_one_line_for_every_action(tmp_path, action, text, fragment):
    path = tmp_path / "configmap.yaml"
    path.write_text(text)
    assert_one_line_error(run_script("model_config.py", *action, "--configmap", path, timeout=60), fragment)


@pytest.mark.parametrize("answer", [[], 5, {"model_version_status": 5}, {"model_version_status": [5]},
                                    {"model_version_status": [{"state": "AVAILABLE", "version": "x"}]},
                                    {"model_version_status": [{"state": "AVAILABLE"}]}],
                         ids=["list", "number", "status-number", "status-item-number", "version-text", "no-version"])
@pytest.mark.parametrize("action", [["load", "--version", "3"], ["canary", "--canary", "2"]], ids=["load", "canary"])
def test_a_server_answer_of_the_wrong_shape_is_one_line(tmp_path, answer, action):
    config = tmp_path / "models.config"
    config.write_text(GOOD.replace('base_path: "/x"', f'base_path: "{REPO}"'))
    server = FakeRest(answer)
    try:
        result = run_script("model_config.py", *action, "--config", config, "--server", server.url, timeout=60)
    finally:
        server.close()
    assert_one_line_error(result, f"{server.url} answered GET /v1/models/mnist with",
                          "not TensorFlow Serving's answer")
