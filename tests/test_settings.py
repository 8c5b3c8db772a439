"""`make configure` saves the cluster settings once, and a second terminal (a new make with a clean environment)
reaches the same namespace with the same kubeconfig; `make where` shows them."""
import os
import shutil
import subprocess
import textwrap

from support import MAKE, REPO

SETTINGS = {"NAMESPACE": "alice", "IMAGE": "registry.example.com/alice/mnist", "TAG": "v3",
            "RWX_CLASS": "standard-rwx"}


def scratch_checkout(tmp_path):
    """The Makefile and its parts in a directory of their own (configure writes there), beside this .venv and a
    kubectl stand-in whose context names the kubeconfig it was given (so the test sees which one it read)."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(REPO / "Makefile", work)
    shutil.copytree(REPO / "make", work / "make")
    (work / ".venv").symlink_to(REPO / ".venv")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(textwrap.dedent("""\
        #!/bin/sh
        case "$*" in
          "config current-context") [ -n "$KUBECONFIG" ] && echo "context-of-$(basename "$KUBECONFIG")" || exit 1 ;;
          "config view"*) echo "" ;;
          *) echo "kubectl $*" ;;
        esac
        """))
    kubectl.chmod(0o755)
    return work, f"{bin_dir}:/usr/bin:/bin"


def fresh_make(work, path, *args):
    """make in a new shell: nothing exported but PATH and HOME, as in a second terminal."""
    return subprocess.run([MAKE, "--no-print-directory", "-o", ".venv/.installed", *args], cwd=work,
                          env={"PATH": path, "HOME": os.environ.get("HOME", "/root")},
                          capture_output=True, text=True, timeout=60)


def test_configure_then_a_fresh_shell_reaches_the_same_namespace(tmp_path):
    work, path = scratch_checkout(tmp_path)
    kubeconfig = tmp_path / "alice.kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    settings = [f"{k}={v}" for k, v in SETTINGS.items()]
    before = fresh_make(work, path, "where")
    assert "namespace   default" in before.stdout and "context     none" in before.stdout, before.stdout

    configured = fresh_make(work, path, "configure", *settings, f"KUBECONFIG={kubeconfig}")
    assert configured.returncode == 0, configured.stderr
    assert "  NAMESPACE=alice" in configured.stdout

    where = fresh_make(work, path, "where")
    assert where.returncode == 0, where.stderr
    for line in ("settings    .workshop.env", f"kubeconfig  {kubeconfig}", "context     context-of-alice.kubeconfig",
                 "namespace   alice", "image       registry.example.com/alice/mnist:v3", "RWX_CLASS   standard-rwx",
                 "running in namespace alice:"):
        assert line in where.stdout, where.stdout
    # The cluster steps use them: the namespace, the image, the storage class.
    deploy = fresh_make(work, path, "-n", "job")
    assert "--namespace alice" in deploy.stdout and "--image registry.example.com/alice/mnist --tag v3" in deploy.stdout
    # The command line still wins, for one command.
    assert "namespace   bob" in fresh_make(work, path, "where", "NAMESPACE=bob").stdout


def test_configure_refuses_a_bad_namespace_or_a_missing_kubeconfig_and_keeps_what_was_saved(tmp_path):
    work, path = scratch_checkout(tmp_path)
    assert fresh_make(work, path, "configure", "NAMESPACE=alice").returncode == 0
    saved = (work / ".workshop.env").read_text()
    bad = fresh_make(work, path, "configure", "NAMESPACE=Alice_1")
    assert bad.returncode != 0
    assert bad.stderr.splitlines()[0].startswith("error: NAMESPACE 'Alice_1' is not a namespace name"), bad.stderr
    missing = fresh_make(work, path, "configure", f"KUBECONFIG={tmp_path}/nowhere")
    assert missing.returncode != 0 and f"error: KUBECONFIG: {tmp_path}/nowhere: no such file" in missing.stderr
    assert (work / ".workshop.env").read_text() == saved
