"""What a notebook pipeline may do on the cluster, in one place: the pipeline command's API calls and the
identities of its pods. The instructor's per-attendee Role (templated/instructor) grants exactly these, and the
tests hold the command's real calls to them.

Argo Workflows v4.1.2 (github.com/argoproj/argo-workflows): a step pod whose Workflow says
automountServiceAccountToken: false gets no token in its main container; its executor (the init and wait
containers) gets the token of executor.serviceAccountName instead, read from that ServiceAccount's token Secret
(workflow/controller/workflowpod.go setupServiceAccount, lines 1823-1858).
"""

# The ServiceAccount of the attendee's JupyterLab pod: the identity of the pipeline command.
NOTEBOOK_SERVICE_ACCOUNT = "notebook"
# The ServiceAccount whose token Argo's executor (init and wait containers) uses in a step pod.
EXECUTOR_SERVICE_ACCOUNT = "pipeline-executor"

# (verb, API group, resource) the pipeline command uses, in the attendee's namespace only:
# read its own pod (image, volumes, service account, working directory) and a step's pod, follow a step's log,
# create a Workflow, read it while it runs, and stop it (Ctrl-C sets spec.shutdown with a patch).
COMMAND_RIGHTS = frozenset({
    ("get", "", "pods"),
    ("get", "", "pods/log"),
    ("create", "argoproj.io", "workflows"),
    ("get", "argoproj.io", "workflows"),
    ("patch", "argoproj.io", "workflows"),
})

# (verb, API group, resource) Argo's executor (the init and wait containers of a step pod) uses with the token of
# EXECUTOR_SERVICE_ACCOUNT: it reports each step's outputs and exit as a WorkflowTaskResult
# (docs/workflow-rbac.md and manifests/quick-start/base/executor/emissary/executor-role.yaml, v4.1.2;
# workflow/executor/taskresult.go createTaskResult and patchTaskResult*). Nothing else: it never patches its pod
# (executor.go AddAnnotation has no caller); progress, outputs and the exit all go through the task result.
EXECUTOR_RIGHTS = frozenset({
    ("create", "argoproj.io", "workflowtaskresults"),
    ("patch", "argoproj.io", "workflowtaskresults"),
})
