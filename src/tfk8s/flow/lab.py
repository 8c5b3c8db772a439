"""The pipelines the lab page (docs/cluster/12-pipelines.md) and the pipeline notebook (notebooks/pipeline.ipynb)
run, as `python src/flow.py run -c "..."` takes them: `>>` starts the next stage once every step of this one
succeeded, `&` runs steps of one stage side by side. Each step is a command line of this repository's scripts,
run from the workspace (the repository's root; /mnt/nfs/work in the attendee's JupyterLab) without a shell.
tests/test_lab_pipelines.py holds every step to its script's own flags.
"""

# Where the lab's pipeline writes, on the shared volume every step mounts: its checkpoints and TensorBoard
# summaries (under /mnt/nfs/runs: the namespace's TensorBoard shows them), its SavedModel versions, its batch.
RUNS = "/mnt/nfs/runs/pipeline"
EXPORTS = "/mnt/nfs/exports/pipeline"
BATCH = "/mnt/nfs/batch/pipeline"

# The lab: train >> (score the 10,000 test digits as a batch & classify the ten drawn digits of data/)
# >> the model config that serves this export (TensorFlow Serving's ConfigMap, printed for the attendee to
# apply: a pipeline's pods may not change the namespace's objects).
LAB_STEPS = [
    [f"python src/main.py --steps 1000 --eval_every 250 --checkpoint_every 500 "
     f"--model_dir {RUNS} --export_dir {EXPORTS}"],
    [f"python src/batch_predict.py --model_base_path {EXPORTS} --input {BATCH}/in --sample_input "
     f"--output {BATCH}/predictions.csv",
     f"python src/batch_predict.py --model_base_path {EXPORTS} --input data --output {RUNS}/samples.csv"],
    [f"python src/model_config.py serve --base_path {EXPORTS} --configmap kube/model-config.yaml"],
]
LAB_PIPELINE = " >> ".join(" & ".join(stage) for stage in LAB_STEPS)

# The notebook's two steps: a short training, then the ten drawn digits classified by its export. Relative
# paths: under runs/pipeline of the workspace, on a laptop (--local) as in the cluster's JupyterLab.
NOTEBOOK_STEPS = [
    ["python src/main.py --steps 100 --eval_every 50 --checkpoint_every 100 "
     "--model_dir runs/pipeline/model --export_dir runs/pipeline/export"],
    ["python src/batch_predict.py --model_base_path runs/pipeline/export --input data "
     "--output runs/pipeline/samples.csv"],
]
NOTEBOOK_PIPELINE = " >> ".join(" & ".join(stage) for stage in NOTEBOOK_STEPS)
