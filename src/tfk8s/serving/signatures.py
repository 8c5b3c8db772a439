"""A loaded SavedModel version: its SignatureDefs and their functions, run as TensorFlow Serving runs Predict.

The checks and their order are predict_util.cc's (input count, then each
input, then the output filter, then the run), with TensorFlow Serving's
messages. Two things happen earlier here than in TensorFlow Serving, which
only finds them while running the graph: a dtype that is not the
signature's, and a shape the signature cannot take. Both are refused before
a single value is allocated, so a 48-byte request for a huge shape costs
nothing.

No TensorFlow here: what reads a SavedModel and runs its functions is a
loader (saved_model.py is TensorFlow's, imported at the first load), so the
rest can be driven by a loader that returns fixed outputs.
"""
from pathlib import Path

import numpy as np

from tfk8s.serving.protocol import DEFAULT_SIGNATURE, Code, ServingError, invalid, skipped, too_large
from tfk8s.serving.tensors import (
    DT,
    DTYPES,
    MAX_MESSAGE_BYTES,
    TensorError,
    check_proto,
    dtype_name,
    nbytes,
    to_ndarray,
)


class LoadError(Exception):
    """A version directory that does not load; `code` is the status TensorFlow Serving records for it."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


PREDICT_METHODS = ("tensorflow/serving/predict", "tensorflow/serving/classify", "tensorflow/serving/regress")
CHUNK = 1024  # rows computed at a time by a request whose caller may go away


def one_line(text, limit=None):
    text = " ".join(str(text).split())
    return text if limit is None else text[:limit]


def shape_text(shape):
    return "[" + ",".join(str(d) for d in shape) + "]"


class Signature:
    """One signature of a loaded version: its SignatureDef and its function (the loader's)."""

    def __init__(self, name, definition, function, scheduler=None):
        self.name, self.definition, self.function = name, definition, function
        self.inputs = dict(definition.inputs.items())
        self.outputs = sorted(definition.outputs)
        self.scheduler = scheduler  # batching.Scheduler, when --enable_batching
        # Every input and output has a batch dimension (-1 first): rows can be computed apart.
        self.batched = all(not info.tensor_shape.unknown_rank and info.tensor_shape.dim and
                           info.tensor_shape.dim[0].size == -1
                           for info in [*definition.inputs.values(), *definition.outputs.values()])

    # ------------------------------------------------------------ Predict's checks

    def check_input_count(self, names):
        """VerifyRequestInputsSize."""
        request, signature = set(names), set(self.inputs)
        if len(request) > len(signature) or (len(request) < len(signature) and not self.definition.defaults):
            raise invalid(
                f"input size does not match signature: {len(request)}!={len(signature)} "
                f"len({{{','.join(sorted(request))}}}) != len({{{','.join(sorted(signature))}}}). "
                f"Sent extra: {{{','.join(sorted(request - signature))}}}. "
                f"Missing but required: {{{','.join(sorted(signature - request))}}}.")

    def check_inputs(self, protos):
        """GetInputValues: every signature input present and parseable (nothing allocated): {alias: dims}."""
        dims = {}
        for alias, info in self.inputs.items():
            if alias not in protos:
                raise invalid(f"Signature input alias: {alias}(feed name: {info.name}) not found in request and no "
                              f"default value provided. Inputs expected to be in the request "
                              f"{{{','.join(sorted(protos))}}}, or default input alias set: "
                              f"{','.join(sorted(self.definition.defaults))}")
            try:
                dims[alias] = check_proto(protos[alias], None)[1]
            except TensorError:
                raise invalid(f"tensor parsing error: {alias}") from None
        return dims

    def check_output_filter(self, output_filter):
        seen = set()
        for alias in output_filter:
            if alias not in self.definition.outputs:
                raise invalid(f"output tensor alias not found in signature: {alias} Outputs expected to be in the "
                              f"set {{{','.join(self.outputs)}}}.")
            if alias in seen:
                raise invalid(f"duplicate output tensor alias: {alias}")
            seen.add(alias)
        return list(output_filter) or self.outputs

    def check_types_and_shapes(self, dtypes, dims):
        """What the graph would refuse, refused before any allocation: {alias: dtype}, {alias: dims}."""
        for i, alias in enumerate(sorted(self.inputs)):
            expected = self.inputs[alias].dtype
            if dtypes[alias] != expected:
                raise invalid(f"Expects arg[{i}] to be {dtype_name(expected)} but {dtype_name(dtypes[alias])} "
                              "is provided")
        for alias, shape in dims.items():
            info = self.inputs[alias]
            if info.tensor_shape.unknown_rank:
                continue
            wanted = [d.size for d in info.tensor_shape.dim]
            if len(wanted) != len(shape) or any(w not in (-1, s) for w, s in zip(wanted, shape)):
                raise invalid(f"input {alias} has shape {shape_text(shape)} but the signature {self.name} takes "
                              f"{shape_text(wanted)} (-1: any size)")

    # ------------------------------------------------------------ running

    def call(self, inputs):
        """{alias: ndarray} -> {alias: ndarray}, all outputs; an error of the model is a ServingError in one line
        (the loader's function maps its runtime's errors; a ValueError or TypeError is INVALID_ARGUMENT)."""
        try:
            return self.function(inputs)
        except (ValueError, TypeError) as err:
            raise invalid(one_line(err, 2000)) from None

    def run(self, inputs, aliases, cancelled=None):
        """Compute (through the batch scheduler when there is one) unless the caller has gone away.

        A large request for a signature whose inputs and outputs all have a batch dimension is computed
        CHUNK rows at a time, the caller checked between chunks: a cancelled 10,000-image request
        stops within one chunk instead of holding the cores for seconds.
        """
        if cancelled is not None and cancelled():
            skipped()
            raise ServingError(Code.CANCELLED, "Cancelled")
        if self.scheduler:
            outputs = self.scheduler.run(inputs, cancelled)
        elif cancelled is not None and self.batched and inputs and \
                min(v.shape[0] if v.ndim else 0 for v in inputs.values()) > CHUNK:
            outputs = self._in_chunks(inputs, cancelled)
        else:
            outputs = self.call(inputs)
        return {alias: outputs[alias] for alias in aliases}

    def _in_chunks(self, inputs, cancelled):
        rows = next(iter(inputs.values())).shape[0]
        parts = []
        for start in range(0, rows, CHUNK):
            if start and cancelled():
                skipped()
                raise ServingError(Code.CANCELLED, "Cancelled")
            part = self.call({alias: value[start:start + CHUNK] for alias, value in inputs.items()})
            if any(v.ndim == 0 or v.shape[0] != min(CHUNK, rows - start) for v in part.values()):
                return self.call(inputs)  # outputs not row by row after all: compute it whole
            parts.append(part)
        return {alias: np.concatenate([p[alias] for p in parts]) for alias in parts[0]}

    def predict_protos(self, protos, output_filter=(), cancelled=None, max_bytes=MAX_MESSAGE_BYTES, budget=None):
        """gRPC Predict: {alias: TensorProto} -> {alias: ndarray}; an input over the message limit or the
        memory budget (a few float_val may stand for a huge shape) is refused before it is built."""
        self.check_input_count(protos)
        dims = self.check_inputs(protos)
        aliases = self.check_output_filter(output_filter)
        self.check_types_and_shapes({a: protos[a].dtype for a in dims}, dims)
        for alias, shape in dims.items():
            refusal = too_large(alias, shape, nbytes(protos[alias].dtype, shape), max_bytes, budget)
            if refusal:
                raise refusal
        arrays = {alias: to_ndarray(protos[alias], max_bytes) for alias in dims}
        return self.run(arrays, aliases, cancelled)

    def predict_arrays(self, arrays, cancelled=None):
        """REST predict: the inputs already converted to the signature's dtypes from JSON."""
        self.check_types_and_shapes({a: self.inputs[a].dtype for a in arrays},
                                    {a: list(v.shape) for a, v in arrays.items()})
        return self.run(arrays, self.outputs, cancelled)


def _warm_up(signature):
    """One call with zeros: the first call of a function builds its graph (a second of latency otherwise)."""
    zeros = {}
    for alias, info in signature.inputs.items():
        if info.dtype not in DTYPES or info.tensor_shape.unknown_rank:
            return
        shape = [1 if d.size == -1 else d.size for d in info.tensor_shape.dim]
        zeros[alias] = np.full(shape, b"" if info.dtype == DT.DT_STRING else 0, DTYPES[info.dtype][0])
    try:
        signature.call(zeros)
    except ServingError:
        pass  # a signature that cannot take zeros (a parser of tf.Examples, say) warms up on its first request


def default_loader():
    """TensorFlow's SavedModel loader (saved_model.py), imported only now: loading TensorFlow takes seconds."""
    from tfk8s.serving import saved_model

    return saved_model.LOADER


class LoadedVersion:
    """One version directory, loaded: its SignatureDefs (metadata, classify, regress) and their functions.

    `options.loader` reads the directory (TensorFlow's SavedModel loader when it is not set): its
    load(path) returns (a SignatureDefMap, {signature name: function}), each function taking and returning
    {alias: ndarray} and raising ServingError for what the model refuses; LoadError when it cannot load.
    """

    def __init__(self, version, path, options=None):
        self.version, self.path = version, Path(path)
        make_scheduler = getattr(options, "make_scheduler", None)
        self.method_name_check = getattr(options, "enable_signature_method_name_check", False)
        if not (self.path / "saved_model.pb").is_file() and not (self.path / "saved_model.pbtxt").is_file():
            raise LoadError(Code.NOT_FOUND, "Could not find SavedModel .pb or .pbtxt at supplied export directory "
                                            f"path: {self.path}")
        loader = getattr(options, "loader", None) or default_loader()
        try:
            self.signature_defs, functions = loader.load(self.path)
        except LoadError:
            raise
        except Exception as err:
            raise LoadError(Code.UNKNOWN, one_line(err, 500)) from None
        self.signatures = {}
        for name, function in functions.items():
            definition = self.signature_defs.signature_def[name]
            signature = Signature(name, definition, function)
            if make_scheduler is not None:
                signature.scheduler = make_scheduler(signature)
            self.signatures[name] = signature
            _warm_up(signature)

    def predict_signature(self, name):
        """The signature a Predict names (none: serving_default); TensorFlow Serving's code when it is missing."""
        name = name or DEFAULT_SIGNATURE
        if name not in self.signatures:
            raise ServingError(Code.FAILED_PRECONDITION, f'Serving signature key "{name}" not found.')
        method = self.signatures[name].definition.method_name
        if self.method_name_check and method not in PREDICT_METHODS:
            raise ServingError(Code.INTERNAL, "Expected prediction signature method_name to be one of "
                               f"{{{', '.join(PREDICT_METHODS)}}}. Was: {method}")
        return self.signatures[name]

    def rest_signature(self, name):
        """The REST handler's lookup (GetInfoMap): INVALID_ARGUMENT, and its own message."""
        key = name or DEFAULT_SIGNATURE
        # A name that is not UTF-8 names no signature (the protobuf map cannot even be asked for it).
        if not utf8_text(key) or key not in self.signature_defs.signature_def:
            raise invalid(f'Serving signature name: "{key}" not found in signature def')
        if not self.signature_defs.signature_def[key].inputs or key not in self.signatures:
            raise invalid(f"Failed to get input map for signature: {name or 'DEFAULT'}")
        return self.signatures[key]


def utf8_text(text):
    """True when `text` is valid UTF-8 (no byte smuggled in by surrogateescape, no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
