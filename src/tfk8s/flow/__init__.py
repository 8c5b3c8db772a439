"""Notebook pipelines: `python src/flow.py run -c "a >> b"` runs commands as the steps of an Argo Workflow."""
