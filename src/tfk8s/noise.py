"""The notices TensorFlow 2.21 prints on a machine without a GPU, before TF_CPP_MIN_LOG_LEVEL applies.

Each process that loads TensorFlow writes them straight to file descriptor 2 as it starts:

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:1796612629.334315    6397 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will ...
    E0000 00:00:1796612645.512326    6397 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: ...

They say only that there is no GPU (the workshop trains on CPUs). A tool that relays a child's output
(tfjob_local.py's replicas, demo.py's trainer) leaves exactly these lines off the terminal, and keeps them in
its log files; where a process writes to the terminal itself, docs/troubleshooting.md explains them.
"""
import re

NO_GPU = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} \d\d:\d\d:[\d.]+ +\d+ cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine, "
    r"GPU will not be used\."
    r"|E\d{4} \d\d:\d\d:[\d.]+ +\d+ cuda_platform\.cc:\d+\] failed call to cuInit: .*")


def is_no_gpu_notice(line):
    """True for one of the no-GPU notices above (a whole line, without its newline)."""
    return NO_GPU.fullmatch(line.rstrip("\r\n")) is not None
