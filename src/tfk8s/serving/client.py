"""Ask a model server what digit an image shows, over gRPC (default) or REST.

Works against TensorFlow Serving (on the cluster, through `kubectl
port-forward`) and against src/serve.py on a laptop: both speak the same API.

    python src/client.py --image data/4.png                          # one image
    python src/client.py --image photos/ --batch_size 32 --top 3     # a directory, batched
    python src/client.py --image data/4.png --rest --port 8501       # the REST API
    python src/client.py --num_tests 1000 --concurrency 16           # load test on the MNIST test set

Any PNG or JPEG works (RGB, RGBA, 16-bit, any size, dark ink on light paper
or white on black): preprocess.py turns it into an MNIST digit first. The
input and output names come from the model's metadata, not from this file.
"""
import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import numpy as np
from google.protobuf import json_format

from tfk8s import mnist, rest
from tfk8s.cli import ArgumentParser, UsageError, UserError, duration, entry_point
from tfk8s.serving import preprocess
from tfk8s.serving.tensors import DT, DTYPES, GRPC_OPTIONS, NUMERIC, apis, dtype_name, to_ndarray, to_tensor_proto

TEST_SET = mnist.DATASETS["mini"][2:]  # the official 10,000 test images and labels, shipped in data/
IMAGE_BYTES = 28 * 28 * 4        # one float32 image as the client holds and sends it
MAX_REQUEST_BYTES = 64 * 2**20   # one request's input tensor (REST sends it as JSON, several times larger)
MAX_IMAGES_BYTES = 2**30         # every image of --image held at once: checked before any is read


class ServerError(UserError):
    """The server could not be reached, or refused the request; the message says which."""


@dataclass
class RemoteSignature:
    """What a client needs to know about a signature, read from the model's metadata."""

    name: str
    input_name: str
    input_dtype: type
    input_shape: list   # -1 where any size goes
    scores_name: str    # the float [n, classes] output: the digit is its argmax


def read_signature(signature_defs, name, model):
    """Pick the input and the scores output of signature `name` from a SignatureDefMap."""
    usable = sorted(k for k in signature_defs.signature_def if not k.startswith("__"))
    if name not in signature_defs.signature_def:
        raise ServerError(f"model {model!r} has no signature {name!r}; it has {', '.join(usable) or 'none'}")
    definition = signature_defs.signature_def[name]
    if len(definition.inputs) != 1:
        raise ServerError(f"signature {name!r} takes {len(definition.inputs)} inputs; this client sends one image")
    input_name, info = next(iter(definition.inputs.items()))
    if info.dtype not in NUMERIC:
        raise ServerError(f"signature {name!r} wants {dtype_name(info.dtype)} input; this client sends numbers")
    scores = [alias for alias, out in definition.outputs.items()
              if out.dtype in (DT.DT_FLOAT, DT.DT_DOUBLE, DT.DT_HALF) and len(out.tensor_shape.dim) == 2]
    if not scores:
        raise ServerError(f"signature {name!r} has no [n, classes] float output to read a digit from")
    return RemoteSignature(name, input_name, DTYPES[info.dtype][0], [d.size for d in info.tensor_shape.dim],
                     "probabilities" if "probabilities" in scores else sorted(scores)[0])


def check_scores(scores, batch, where):
    """The answer's scores must be [n, classes] for the n images asked: anything else is one line."""
    if scores.ndim != 2 or scores.shape[0] != len(batch) or scores.shape[1] < 1:
        raise ServerError(f"{where} answered scores of shape {list(scores.shape)} for {len(batch)} image"
                          f"{'s' * (len(batch) != 1)}; expected [{len(batch)}, classes]")
    return scores


class Deadline:
    """--timeout as a total deadline: every call gets what is left of it, none starts once it has passed."""

    def __init__(self, seconds):
        self.seconds, self.end = seconds, time.monotonic() + seconds

    def left(self, address):
        left = self.end - time.monotonic()
        if left <= 0:
            raise ServerError(f"no complete answer from {address} within --timeout {self.seconds:g}s")
        return left


def shape_for(signature, batch):
    """Fit a batch of [n, 28, 28, 1] images to the input shape the signature declares ([n, 784], ...)."""
    shape = list(signature.input_shape)
    if shape and shape[0] == -1:
        shape[0] = batch.shape[0]
    if -1 in shape or int(np.prod(shape)) != batch.size:
        raise ServerError(f"signature {signature.name!r} wants input shape {signature.input_shape}; "
                          f"cannot fit {batch.shape[0]} images of 28x28 into it")
    return batch.reshape(shape).astype(signature.input_dtype, copy=False)


class GrpcModel:
    """A model on a TensorFlow Serving gRPC endpoint: metadata and Predict."""

    protocol = "gRPC"

    def __init__(self, host, port, model, signature_name, version=None, label=None, timeout=10.0):
        self.address, self.model, self.timeout = f"{host}:{port}", model, timeout
        self.deadline = Deadline(timeout)
        self.channel = grpc.insecure_channel(self.address, options=GRPC_OPTIONS)
        self.stub = apis.prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.spec = apis.model_pb2.ModelSpec(name=model, signature_name=signature_name)
        if version is not None:
            self.spec.version.value = version
        if label is not None:
            self.spec.version_label = label
        self.signature = None

    def _error(self, err):
        """A failed call (grpc.RpcError) as one line."""
        code = err.code()
        if "http1.x" in (err.details() or ""):  # an HTTP/1 server answered gRPC's HTTP/2 preface
            return ServerError(f"{self.address} speaks HTTP/1.x, not gRPC: it is a REST port (add --rest, or give the "
                               "gRPC port, 8500 by default)")
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return ServerError(f"cannot reach a model server at {self.address} within {self.timeout:g}s "
                               f"({code.name}: {err.details()}); is it running?")
        return ServerError(f"{self.address} refused the request: {code.name}: {err.details()}")

    def _call(self, method, request):
        try:
            return method(request, timeout=self.deadline.left(self.address))
        except grpc.RpcError as err:
            raise self._error(err) from None

    def connect(self):
        """Read the signature's input and output names from GetModelMetadata."""
        request = apis.get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.CopyFrom(self.spec)
        request.model_spec.ClearField("signature_name")
        response = self._call(self.stub.GetModelMetadata, request)
        signature_defs = apis.get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_defs)
        self.signature = read_signature(signature_defs, self.spec.signature_name, self.model)
        return self.signature

    def _predict_request(self, batch):
        request = apis.predict_pb2.PredictRequest(model_spec=self.spec, output_filter=[self.signature.scores_name])
        request.inputs[self.signature.input_name].CopyFrom(to_tensor_proto(shape_for(self.signature, batch)))
        return request

    def _scores(self, response, batch):
        try:
            scores = to_ndarray(response.outputs[self.signature.scores_name])
        except (KeyError, ValueError) as err:
            raise ServerError(f"{self.address} answered without a readable {self.signature.scores_name!r} "
                              f"output ({err})") from None
        return check_scores(scores, batch, self.address), response.model_spec.version.value

    def predict(self, batch):
        """float32 [n, 28, 28, 1] -> (scores [n, classes], the version that answered)."""
        return self._scores(self._call(self.stub.Predict, self._predict_request(batch)), batch)

    def predict_async(self, batch, done):
        """Send without waiting; gRPC's own thread calls done(result or ServerError) when the answer comes."""
        try:
            future = self.stub.Predict.future(self._predict_request(batch), timeout=self.deadline.left(self.address))
        except ServerError as err:
            done(err)
            return

        def finished(f):
            try:
                result = self._scores(f.result(), batch)
            except grpc.RpcError as err:
                result = self._error(err)
            except ServerError as err:
                result = err
            done(result)

        future.add_done_callback(finished)


class RestModel:
    """The same model through TensorFlow Serving's REST API (JSON)."""

    protocol = "REST"

    def __init__(self, host, port, model, signature_name, version=None, label=None, timeout=10.0):
        self.address, self.model, self.timeout = f"{host}:{port}", model, timeout
        self.deadline = Deadline(timeout)
        self.signature_name, self.signature = signature_name, None
        path = f"/v1/models/{model}"
        if version is not None:
            path += f"/versions/{version}"
        elif label is not None:
            path += f"/labels/{label}"
        self.url = f"http://{host}:{port}{path}"
        self.version, self.pool = version, None

    def _call(self, url, body=None):
        try:
            status, answer = rest.call(url, body, self.deadline.left(self.address))
        except rest.NotHttpError:
            raise ServerError(f"{self.address} did not answer in HTTP/1.1: is it a gRPC port? (drop --rest, or give "
                              "the REST port, 8501 by default)") from None
        except rest.UnreachableError as err:
            raise ServerError(f"cannot reach a model server at {self.address} within {self.timeout:g}s "
                              f"({err}); is it running?") from None
        except rest.NotJsonError:
            raise ServerError(f"{self.address} answered with something that is not JSON") from None
        if status != 200:
            detail = answer.get("error", "") if isinstance(answer, dict) else ""
            raise ServerError(f"{self.address} refused the request: HTTP {status}: {detail}")
        return answer

    def connect(self):
        metadata = self._call(self.url + "/metadata")
        try:
            signature_defs = json_format.ParseDict(metadata["metadata"]["signature_def"],
                                                   apis.get_model_metadata_pb2.SignatureDefMap(),
                                                   ignore_unknown_fields=True)
            self.version = int(metadata["model_spec"]["version"])
        except (KeyError, TypeError, ValueError, json_format.ParseError) as err:
            raise ServerError(f"{self.address} answered metadata TensorFlow Serving would not ({err})") from None
        self.signature = read_signature(signature_defs, self.signature_name, self.model)
        return self.signature

    def predict_async(self, batch, done):
        """urllib blocks: run the request on a thread, call done(result or ServerError)."""
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=64)

        def run():
            try:
                done(self.predict(batch))
            except ServerError as err:
                done(err)

        self.pool.submit(run)

    def predict(self, batch):
        inputs = shape_for(self.signature, batch)
        body = {"signature_name": self.signature.name, "inputs": {self.signature.input_name: inputs.tolist()}}
        answer = self._call(self.url + ":predict", body)
        try:
            outputs = answer["outputs"]
            scores = outputs[self.signature.scores_name] if isinstance(outputs, dict) else outputs
            scores = np.asarray(scores, dtype=np.float32)
        except (KeyError, TypeError, ValueError) as err:
            raise ServerError(f"{self.address} answered without a readable {self.signature.scores_name!r} "
                              f"output ({' '.join(str(err).split())[:120]})") from None
        return check_scores(scores, batch, self.address), self.version


def top_k(scores, k):
    """[(digit, probability), ...] best first."""
    order = np.argsort(-scores, kind="stable")[:k]
    return [(int(i), float(scores[i])) for i in order]


def classify(model, paths, images, batch_size, top, as_json, out=sys.stdout):
    """Ask for `images` (float32 [n, 28, 28, 1], read from `paths`) in batches; print one result per image."""
    latencies = []
    for start in range(0, len(paths), batch_size):
        batch = images[start:start + batch_size]
        began = time.perf_counter()
        scores, version = model.predict(batch)
        latency = (time.perf_counter() - began) * 1000
        latencies.append(latency)
        for path, row in zip(paths[start:start + batch_size], scores):
            best = top_k(row, max(1, top))
            if as_json:
                print(json.dumps({"image": str(path), "digit": best[0][0], "probability": round(best[0][1], 6),
                                  "top": [{"digit": d, "probability": round(p, 6)} for d, p in best],
                                  "model": model.model, "version": version, "signature": model.signature.name,
                                  "protocol": model.protocol, "batch_size": len(batch),
                                  "latency_ms": round(latency, 3)}), file=out)
            else:
                print(f"{path}: {best[0][0]} (probability {best[0][1]:.4f})", file=out)
                if top > 1:
                    print("  top {}: {}".format(top, ", ".join(f"{d} {p:.4f}" for d, p in best)), file=out)
    if not as_json:
        requests = len(latencies)
        print(f"model {model.model} version {version}, signature {model.signature.name}, {model.protocol} "
              f"{model.address}: {len(paths)} image{'s' * (len(paths) != 1)} in {requests} "
              f"request{'s' * (requests != 1)}, round trip {np.mean(latencies):.1f} ms"
              f"{' per request' if requests > 1 else ''}", file=out)


def read_test_set(data_dir=mnist.DATA_DIR):
    images, labels = (mnist.read_idx(mnist.ensure_file(name, data_dir)) for name in TEST_SET)
    return images[..., None].astype(np.float32), labels.astype(np.int64)


def run_load_test(model, images, labels, num_tests, concurrency):
    """Send `num_tests` one-image requests, `concurrency` in flight, as TensorFlow Serving's mnist_client does.

    Requests go out asynchronously (no thread per request: the client must
    not be what limits the server). Returns throughput, latency percentiles,
    the share of failed requests and the accuracy of the answers.
    """
    slots, lock, finished = threading.BoundedSemaphore(concurrency), threading.Lock(), threading.Event()
    latencies, failures, correct, answered = [], [], [0], [0]

    def send(i):
        j, began = i % len(images), time.perf_counter()

        def done(result):
            # Runs on a gRPC or pool thread: whatever happens, the request is counted and its slot freed, or the
            # load test would wait for it for ever.
            elapsed = time.perf_counter() - began
            with lock:
                try:
                    if isinstance(result, ServerError):
                        failures.append(str(result))
                    else:
                        correct[0] += int(np.argmax(result[0][0]) == labels[j])
                        latencies.append(elapsed)
                except Exception as err:  # noqa: BLE001 (an answer of a shape no check foresaw)
                    failures.append(f"unreadable answer ({type(err).__name__}: {err})")
                answered[0] += 1
                if answered[0] == num_tests:
                    finished.set()
            slots.release()

        model.predict_async(images[j:j + 1], done)

    began = time.perf_counter()
    for i in range(num_tests):
        if not slots.acquire(timeout=model.deadline.left(model.address)):
            raise model_deadline(model)
        send(i)
    if not finished.wait(timeout=max(0.0, model.deadline.end - time.monotonic())):
        raise model_deadline(model)
    wall = time.perf_counter() - began
    ms = np.asarray(latencies) * 1000
    return {
        "requests": num_tests, "concurrency": concurrency, "seconds": wall,
        "throughput": len(latencies) / wall,
        "p50_ms": float(np.percentile(ms, 50)) if ms.size else float("nan"),
        "p99_ms": float(np.percentile(ms, 99)) if ms.size else float("nan"),
        "failed": len(failures), "error_rate": len(failures) / num_tests,
        "accuracy": correct[0] / len(latencies) if latencies else 0.0,
        "first_failure": failures[0] if failures else None,
    }


def model_deadline(model):
    return ServerError(f"the load test did not finish within --timeout {model.deadline.seconds:g}s "
                       f"({model.protocol} {model.address})")


def parse_args(argv=None):
    p = ArgumentParser(description="Classify digit images with a model served by TensorFlow Serving or serve.py.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default="localhost", help="the model server's host")
    p.add_argument("--port", type=int, help="the model server's port (default: 8500 for gRPC, 8501 with --rest)")
    p.add_argument("--rest", action="store_true", help="use the REST (JSON) API instead of gRPC")
    p.add_argument("--model", default="mnist", help="model name on the server")
    p.add_argument("--signature_name", default="predict", help="which signature of the model to call")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model_version", type=int, help="ask this version (default: the newest the server has)")
    which.add_argument("--version_label", help="ask the version with this label (a server model config sets labels)")
    p.add_argument("--image", help="a PNG or JPEG file, or a directory of them")
    p.add_argument("--batch_size", type=int, default=64, help="images per request when --image is a directory")
    p.add_argument("--top", type=int, default=1, metavar="K", help="also print the K most likely digits")
    p.add_argument("--json", action="store_true", help="print one JSON object per image per line")
    p.add_argument("--num_tests", type=int, metavar="N",
                   help="load test: N one-image requests of MNIST test images, reporting latency and accuracy")
    p.add_argument("--concurrency", type=int, default=1, help="requests in flight during --num_tests")
    p.add_argument("--timeout", type=duration(), metavar="SECONDS",
                   help="seconds the whole run may take, every answer within it (default: 10, and for a load test "
                        "10 more per 1,000 requests)")
    args = p.parse_args(argv)
    if (args.image is None) == (args.num_tests is None):
        raise UsageError("give either --image FILE_OR_DIR or --num_tests N")
    for flag in ("batch_size", "top", "concurrency"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag} must be at least 1, not {getattr(args, flag)}")
    if args.num_tests is not None and args.num_tests < 1:
        raise UsageError(f"--num_tests must be at least 1, not {args.num_tests}")
    if args.batch_size * IMAGE_BYTES > MAX_REQUEST_BYTES:
        raise UsageError(f"--batch_size {args.batch_size} makes requests of {args.batch_size * IMAGE_BYTES:,} bytes, "
                         f"more than {MAX_REQUEST_BYTES:,}: at most {MAX_REQUEST_BYTES // IMAGE_BYTES}")
    if args.timeout is None:
        args.timeout = 10.0 + 10.0 * (args.num_tests or 0) / 1000
    if args.port is None:
        args.port = 8501 if args.rest else 8500
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port must be between 1 and 65535 (a TCP port), not {args.port}")
    return args


@entry_point
def main(argv=None):
    args = parse_args(argv)
    if args.image:  # a missing or broken file fails before any network traffic
        paths = preprocess.image_paths(args.image)
        if len(paths) * IMAGE_BYTES > MAX_IMAGES_BYTES:
            raise UsageError(f"{args.image} holds {len(paths):,} images: more than this client holds at once "
                             f"({MAX_IMAGES_BYTES // IMAGE_BYTES:,}); split the folder")
        images = preprocess.load_batch(paths)
    model_class = RestModel if args.rest else GrpcModel
    model = model_class(args.host, args.port, args.model, args.signature_name,
                  args.model_version, args.version_label, args.timeout)
    model.connect()
    if args.image:
        classify(model, paths, images, args.batch_size, args.top, args.json)
        return
    images, labels = read_test_set()
    report = run_load_test(model, images, labels, args.num_tests, args.concurrency)
    print(f"{report['requests']} requests, {report['concurrency']} in flight, {model.protocol} {model.address}: "
          f"{report['throughput']:.0f} predictions/s, latency p50 {report['p50_ms']:.1f} ms "
          f"p99 {report['p99_ms']:.1f} ms, error rate {report['error_rate']:.2%} "
          f"({report['failed']} failed), accuracy {report['accuracy']:.2%}")
    if report["failed"]:
        raise ServerError(f"{report['failed']} of {report['requests']} requests failed; "
                          f"the first: {report['first_failure']}")
