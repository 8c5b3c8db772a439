"""The connection contract (templated/instructor/connections.yaml), decided by network-config-analyzer on the
rendered instructor and attendee NetworkPolicies: every needed connection allowed, every forbidden one denied."""
import pytest
import yaml

from support import REPO, assert_one_line_error, run_script
from tfk8s.instructor import connections
from tfk8s.instructor import katib as katib_access

CONTRACT = yaml.safe_load(connections.CONTRACT.read_text())


@pytest.fixture(scope="module")
def checked():
    return connections.check()


def test_every_needed_connection_is_allowed_and_every_forbidden_one_denied(checked):
    assert len(checked) == len(CONTRACT["needed"]) + len(CONTRACT["forbidden"])
    for connection in checked:
        expected = "allowed" if connection.needed else "denied"
        if connection.exempt:
            expected = f"exempt: {connection.exempt}"
        assert connection.verdict == expected, (connection.source, connection.target, connection.port)


def test_the_contract_names_the_issues_connections():
    needed = {(c["from"], c["to"], c["port"]) for c in CONTRACT["needed"]}
    assert ("kubeflow/katib-controller", "alice/mnist-sweep-grid", 6789) in needed
    assert ("alice/mnist-sweep-abcdefgh-chief-0", "kubeflow/katib-db-manager", 6789) in needed
    assert ("node", "workshop-storage/nfs-alice", 2049) in needed
    forbidden = {(c["from"], c["to"], c["port"]) for c in CONTRACT["forbidden"]}
    for target in ("169.254.169.254", "apiserver", "workshop-storage/nfs-bob", "workshop-storage/nfs-alice"):
        assert any(t == target for _, t, _ in forbidden), target


def test_without_katibs_policies_the_analyzer_finds_katibs_paths_cut(monkeypatch):
    """The analyzer sees the policies: drop Katib's two, and exactly Katib's two paths are denied."""
    def without_katib(namespace):
        return "".join(f"---\n{yaml.safe_dump(d)}" for d in yaml.safe_load_all(real(namespace))
                       if d and d["kind"] != "NetworkPolicy")
    real = katib_access.render
    monkeypatch.setattr(katib_access, "render", without_katib)
    broken = [c for c in connections.check() if not c.holds]
    assert {(c.source, c.target, c.verdict) for c in broken} == {
        ("kubeflow/katib-controller", "alice/mnist-sweep-grid", "DENIED"),
        ("alice/mnist-sweep-abcdefgh-chief-0", "kubeflow/katib-db-manager", "DENIED")}


def test_a_contract_the_policies_break_is_one_error_line(tmp_path, monkeypatch):
    contract = dict(CONTRACT)
    contract["forbidden"] = [*CONTRACT["forbidden"], {"what": "a replica of one's own", "port": 2222,
                                                      "from": "alice/mnist-tfjob-worker-0",
                                                      "to": "alice/mnist-tfjob-chief-0"}]
    path = tmp_path / "connections.yaml"
    path.write_text(yaml.safe_dump(contract))
    found = {(c.source, c.target): c.verdict for c in connections.check(path=path) if not c.needed}
    assert found[("alice/mnist-tfjob-worker-0", "alice/mnist-tfjob-chief-0")] == "ALLOWED"


def test_python_instructor_connections_prints_the_table():
    result = run_script("instructor.py", "connections")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["step", "from", "to", "port", "verdict"]
    assert len(lines) == 2 + len(CONTRACT["needed"]) + len(CONTRACT["forbidden"])
    assert any(line.startswith("needed") and "kubeflow/katib-controller" in line and line.endswith("allowed")
               for line in lines)
    assert any(line.startswith("never") and "169.254.169.254" in line and line.endswith("denied") for line in lines)
    assert result.stderr == ""
    assert lines[-1].startswith("every needed connection allowed, every forbidden one denied")
    # The instructor's guide shows the table as it is.
    assert "\n".join(line.rstrip() for line in lines) in (REPO / "docs" / "instructor.md").read_text()
    refused = run_script("instructor.py", "connections", "alice")
    assert_one_line_error(refused, "unrecognized arguments")
