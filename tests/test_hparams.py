"""TensorBoard's HParams tab: one row per run, with that run's own figures, read back through TensorBoard's own
hparams backend (tensorboard 2.21: plugins/hparams/list_session_groups.Handler over backend_context.Context, a
TBContext whose data provider reads an EventMultiplexer, as `tensorboard --logdir` builds it)."""
import pytest

from support import run_script, tf_events


def session_groups(logdir):
    """The HParams tab's rows for `logdir`: {group name: (sessions' names, hparams, metrics by (group, tag))}."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups

    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(logdir))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(logdir))
    tb_context = base_plugin.TBContext(logdir=str(logdir), multiplexer=multiplexer, data_provider=provider)
    request = api_pb2.ListSessionGroupsRequest(start_index=0, slice_size=100,
                                               allowed_statuses=[api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS])
    handler = list_session_groups.Handler(context.RequestContext(), backend_context.Context(tb_context), "", request)
    rows = {}
    for group in handler.run().session_groups:
        hparams = {name: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
                   for name, value in group.hparams.items()}
        metrics = {(m.name.group, m.name.tag): m.value for m in group.metric_values}
        rows[group.name] = ([s.name for s in group.sessions], hparams, metrics)
    return rows


@pytest.mark.slow
def test_two_runs_with_the_same_model_dir_basename_are_two_hparams_rows(tmp_path):
    logdir = tmp_path / "runs"
    runs = {"demo": 1, "local": 2}  # runs/demo/model and runs/local/model, as `make demo` and `make train` write
    for name, layers in runs.items():
        result = run_script("main.py", "--steps", 20, "--eval_every", 10, "--checkpoint_every", 10,
                            "--hidden_layers", layers, "--model_dir", logdir / name / "model",
                            "--export_dir", tmp_path / name / "export")
        assert result.returncode == 0, result.stdout + result.stderr

    rows = session_groups(logdir)
    assert len(rows) == 2, rows
    by_session = {sessions[0]: (sessions, hparams, metrics) for sessions, hparams, metrics in rows.values()}
    assert set(by_session) == {"demo/model", "local/model"}
    for name, layers in runs.items():
        sessions, hparams, metrics = by_session[f"{name}/model"]
        assert sessions == [f"{name}/model"]  # one run per row: no average with another run
        assert [group for group, row in rows.items() if row[0] == sessions][0].startswith(f"{name}/model ")
        assert hparams["hidden_layers"] == layers
        # The row's figures are its own run's last evaluation and test, as the trainer wrote them.
        for group in ("eval", "test"):
            last = tf_events(logdir / name / "model" / group)[-1]
            assert metrics[(group, "accuracy")] == pytest.approx(last[1], abs=1e-6), (name, group, metrics)
