"""JSON bodies <-> tensors and tf.Examples, with the rules and messages of TensorFlow Serving's json_tensor.cc.

Predict: {"instances": [...]} (row format, one element per batch item, or
one object per item naming the inputs) or {"inputs": ...} (columnar: the
whole tensor, or an object of them; keys the signature does not take are
ignored). "signature_name", when present, must be a string. Values must fit
the input's dtype: booleans are not numbers, 1.0 is not an int32; a string
input takes strings or {"b64": "..."}. Outputs come back the same way
("predictions" or "outputs"); a string output whose alias ends in `_bytes`
is written as {"b64": ...}. Classify and regress: json_examples.py.
"""
import base64
import binascii

import numpy as np

from tfk8s.serving.json_io import PrettyWriter, debug_string, decimal, escape, type_name
from tfk8s.serving.protocol import Code, ServingError, invalid
from tfk8s.serving.tensors import DT, DTYPES, dtype_name

INT32, INT64, UINT32, UINT64 = (2**31, 2**63, 2**32, 2**64)


def format_error(doc, *words):
    return invalid(f"JSON Value: {debug_string(doc)} " + "".join(words))


def check_document(doc):
    """ParseJson's object check and FillSignature: the signature name the body asks for ("" if none)."""
    if not isinstance(doc, dict):
        raise format_error(doc, "Is not object")
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid(f"JSON Value: {debug_string(doc)} not formatted correctly. 'signature_name' key must be a "
                      "string value.")
    return name


def is_b64(value):
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def base64_unescape(text):
    """absl::Base64Unescape: whitespace anywhere is skipped, '=' or '.' pads, and the padding may be left
    out (but if given, it must be right). None when the text is not base64."""
    cut = min([i for i in (text.find("="), text.find(".")) if i >= 0], default=len(text))
    data = "".join(c for c in text[:cut] if c not in " \t\n\v\f\r")
    tail = text[cut:]
    if any(c not in "=. \t\n\v\f\r" for c in tail) or len(data) % 4 == 1:
        return None
    expected = {0: 0, 2: 2, 3: 1}[len(data) % 4]
    if sum(c in "=." for c in tail) not in (0, expected):
        return None
    try:
        return base64.b64decode(data + "=" * expected, validate=True)
    except (binascii.Error, ValueError):
        return None


def b64_value(value):
    if not is_b64(value):
        raise invalid(f"JSON Value: {debug_string(value)} not formatted correctly for base64 data")
    decoded = base64_unescape(value["b64"])
    if decoded is None:
        raise invalid("Unable to base64 decode")
    return decoded


def _type_error(value, dtype):
    return invalid(f"JSON Value: {debug_string(value)} Type: {type_name(value)} is not of expected type: "
                   f"{dtype_name(dtype)}")


def _scalar(value, dtype):
    """AddValueToTensor: one JSON value as a value of `dtype`."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    is_number = is_int or isinstance(value, float)
    if dtype in (DT.DT_FLOAT, DT.DT_DOUBLE):
        if not is_number:
            raise _type_error(value, dtype)
        try:
            return float(value)
        except OverflowError:  # an integer literal past double's range
            return float("inf") if value > 0 else float("-inf")
    if dtype in (DT.DT_INT32, DT.DT_INT16, DT.DT_INT8, DT.DT_UINT8):
        if not (is_int and -INT32 <= value < INT32):
            raise _type_error(value, dtype)
        return value
    if dtype == DT.DT_INT64:
        if not (is_int and -INT64 <= value < INT64):
            raise _type_error(value, dtype)
        return value
    if dtype in (DT.DT_UINT32, DT.DT_UINT64):
        if not (is_int and 0 <= value < (UINT32 if dtype == DT.DT_UINT32 else UINT64)):
            raise _type_error(value, dtype)
        return value
    if dtype == DT.DT_BOOL:
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        return value
    if dtype == DT.DT_STRING:
        if not isinstance(value, str):
            raise _type_error(value, dtype)
        return value.encode("utf-8", "surrogateescape")
    raise ServingError(Code.UNIMPLEMENTED, f"Conversion of JSON Value: {debug_string(value)} to type: "
                                           f"{dtype_name(dtype)}")


def _dense_shape(value):
    """GetDenseTensorShape: follow element [0] down the lists."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if len(shape) > 254:
            raise invalid("JSON value nests lists deeper than a tensor's 254 dimensions")
        if not value:
            break
        value = value[0]
    return shape


def _fill(value, level, shape, dtype, out):
    """FillTensorProto: check every list's length against `shape`, append the leaves to `out`."""
    if not isinstance(value, list):
        if level != len(shape):
            raise invalid(f"JSON Value: {debug_string(value)} found at incorrect level: {level + 1} in the JSON DOM. "
                          f"Expected at level: {len(shape)}")
        if isinstance(value, dict):
            if dtype != DT.DT_STRING:
                raise _type_error(value, dtype)
            out.append(b64_value(value))
        else:
            out.append(_scalar(value, dtype))
        return
    if level >= len(shape):
        raise invalid(f"Encountered list at unexpected level: {level} expected < {len(shape)}")
    if len(value) != shape[level]:
        raise invalid(f"Encountered list at unexpected size: {len(value)} at level: {level} expected size: "
                      f"{shape[level]}")
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


def _fast(value, dtype, booleans):
    """numpy's view of a rectangular list of plain numbers, when it needs no per-value check; else None."""
    if dtype not in (DT.DT_FLOAT, DT.DT_DOUBLE, DT.DT_INT64, DT.DT_INT32) or booleans:
        return None
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        return None
    if array.dtype.kind == "i" or (array.dtype.kind == "f" and dtype in (DT.DT_FLOAT, DT.DT_DOUBLE)):
        if array.dtype.kind == "i" and dtype == DT.DT_INT32 and array.size and \
                (array.min() < -INT32 or array.max() >= INT32):
            return None
        if array.ndim > 254:
            return None
        return array.astype(np.float64).astype(DTYPES[dtype][0]) if dtype == DT.DT_FLOAT else \
            array.astype(DTYPES[dtype][0])
    return None


def to_tensor(value, dtype, booleans=True):
    """One input's JSON value -> ndarray of `dtype` (shape from the nested lists)."""
    fast = _fast(value, dtype, booleans)
    if fast is not None:
        return fast
    shape = _dense_shape(value)
    out = []
    _fill(value, 0, shape, dtype, out)
    np_type = DTYPES[dtype][0]
    if dtype == DT.DT_STRING:
        array = np.empty(len(out), dtype=object)
        array[:] = out
    elif np.dtype(np_type).kind in "iu":  # int8/16 and uint8 wrap as TensorFlow's casts do
        array = np.array(out, dtype=np.uint64 if dtype == DT.DT_UINT64 else np.int64).astype(np_type)
    else:
        array = np.array(out, dtype=np_type)
    return array.reshape(shape)


def _element(value):
    return isinstance(value, dict) and not is_b64(value)


def _planned_dims(doc, infos):
    """{alias: dims} the body's tensors will have, read from the nesting of lists alone (the first row of
    "instances" stands for every row: a row that differs is refused while the tensor is built)."""
    if "instances" in doc:
        instances = doc["instances"]
        first = instances[0]
        if _element(first):
            return {alias: [len(instances), *_dense_shape(value)] for alias, value in first.items() if alias in infos}
        return {next(iter(infos)): [len(instances), *_dense_shape(first)]}
    inputs = doc["inputs"]
    if not isinstance(inputs, dict) or is_b64(inputs):
        return {next(iter(infos)): _dense_shape(inputs)}
    return {alias: _dense_shape(inputs[alias]) for alias in infos if alias in inputs}


def predict_inputs(doc, signature, booleans=True, check=None):
    """FillPredictRequestFromJson's body part: ({alias: ndarray}, "row" or "columnar").

    check({alias: dims}), when given, sees the shapes the tensors will have before any is built: a shape
    the signature refuses, or a size over the memory budget, costs no memory.
    """
    infos = signature.inputs
    instances, inputs = doc.get("instances"), doc.get("inputs")
    if check is not None and infos and ((isinstance(instances, list) and instances and "inputs" not in doc) or
                                        ("inputs" in doc and "instances" not in doc)):
        check(_planned_dims(doc, infos))
    if "instances" in doc and "inputs" in doc:
        raise format_error(doc, "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to "
                                 "exist ")
    if "instances" in doc:
        if not isinstance(instances, list):
            raise format_error(doc, "Expecting 'instances' to be an list/array")
        if not instances:
            raise format_error(doc, "No values in 'instances' array")
        return _rows(instances, infos, booleans), "row"
    if "inputs" in doc:
        if not isinstance(inputs, dict) or is_b64(inputs):
            if len(infos) > 1:
                raise invalid("inputs is a plain value/list, but expecting an object as multiple input tensors "
                              "required as per tensorinfo_map")
            alias, info = next(iter(infos.items()))
            return {alias: to_tensor(inputs, info.dtype, booleans)}, "columnar"
        arrays = {}
        for alias, info in infos.items():
            if alias not in inputs:
                raise invalid(f"Missing named input: {alias} in 'inputs' object.")
            arrays[alias] = to_tensor(inputs[alias], info.dtype, booleans)
        return arrays, "columnar"
    raise invalid("Missing 'inputs' or 'instances' key")


def _wrapped(err, prefix):
    return invalid(f"{prefix} of 'instances' list. Error: {err}")


def _rows(instances, infos, booleans):
    """FillTensorMapFromInstancesList."""
    if not isinstance(instances[0], dict) and len(infos) > 1:
        raise invalid("instances is a plain list, but expecting list of objects as multiple input tensors required "
                      "as per tensorinfo_map")
    names = sorted(infos)
    if not _element(instances[0]):
        if any(_element(item) for item in instances):
            i = next(i for i, item in enumerate(instances) if _element(item))
            raise invalid(f"Expecting value/list but got object at item {i} of input list")
        alias = next(iter(infos))
        fast = _fast(instances, infos[alias].dtype, booleans)
        if fast is not None and fast.ndim >= 1:
            return {alias: fast}
        columns = {alias: [(i, item) for i, item in enumerate(instances)]}
        keyed = False
    else:
        columns, keyed = {}, True
        for i, item in enumerate(instances):
            if not _element(item):
                raise invalid(f"Expecting object but got list at item {i} of input list")
            for key, value in item.items():
                if key not in infos:
                    raise _wrapped(invalid(f"JSON object: does not have named input: {key}"),
                                   f"Failed to process element: {i} key: {key}")
                columns.setdefault(key, []).append((i, value))
            if sorted(item) != names:
                raise invalid(f"Failed to process element: {i} of 'instances' list. JSON object: "
                              f"{debug_string(item)} keys must be equal to: {','.join(names)}")
    arrays = {}
    for alias, items in columns.items():
        first_shape, parts = None, []
        for i, value in items:
            prefix = f"Failed to process element: {i} key: {alias}" if keyed else f"Failed to process element: {i}"
            try:
                array = to_tensor(value, infos[alias].dtype, booleans)
                if first_shape is None:
                    first_shape = array.shape
                elif array.size != int(np.prod(first_shape)):
                    raise invalid(f"Expecting tensor size: {int(np.prod(first_shape))} but got: {array.size}")
                elif array.shape != first_shape:
                    raise invalid(f"Expecting shape [{','.join(map(str, first_shape))}] but got: "
                                  f"[{','.join(map(str, array.shape))}]")
            except ServingError as err:
                raise _wrapped(err, prefix) from None
            parts.append(array)
        arrays[alias] = np.stack(parts)
    return arrays


# ---------------------------------------------------------------- responses

def _values(array, alias):
    """Every value of an output as its JSON text (AddSingleValueAndAdvance)."""
    flat = array.reshape(-1)
    kind = array.dtype
    if kind == np.float32:
        return [decimal(v) for v in flat.tolist()]
    if kind == np.float64:
        return [decimal(v, 17) for v in flat.tolist()]
    if kind == np.bool_:
        return ["true" if v else "false" for v in flat.tolist()]
    if kind.kind in "iu":
        return [str(v) for v in flat.tolist()]
    if kind.kind == "O":
        return [escape(v.decode("utf-8", "surrogateescape")) for v in flat]
    raise invalid(f"Failed to write JSON value for tensor type: {dtype_name(_dt_of(array))}")


def _dt_of(array):
    for dt, (np_type, _) in DTYPES.items():
        if array.dtype == np.dtype(np_type):
            return dt
    return DT.DT_COMPLEX64 if array.dtype.kind == "c" else DT.DT_INVALID


def _texts(array, alias):
    if array.dtype == object and alias.endswith("_bytes"):
        return [("b64", base64.b64encode(v).decode()) for v in array.reshape(-1)]
    return _values(array, alias)


def _write_one(writer, texts, offset):
    text = texts[offset]
    if isinstance(text, tuple):
        writer.start(False)
        writer.key("b64")
        writer.raw(escape(text[1]))
        writer.end()
    else:
        writer.raw(text)


def predict_response(outputs, format):
    """MakeJsonFromTensors: {"predictions": ...} (row) or {"outputs": ...} (columnar)."""
    if not outputs:
        raise invalid("Cannot convert empty tensor map to JSON")
    writer = PrettyWriter()
    writer.start(False)
    if format == "row":
        batch = None
        for alias, array in outputs.items():
            if array.ndim == 0:
                raise invalid(f"Tensor name: {alias} has no shape information ")
            if batch is not None and array.shape[0] != batch:
                raise invalid(f"Tensor name: {alias} has inconsistent batch size: {array.shape[0]} expecting: {batch}")
            batch = array.shape[0]
        texts = {alias: _texts(array, alias) for alias, array in outputs.items()}
        offsets = dict.fromkeys(outputs, 0)
        writer.key("predictions")
        writer.start(True)
        objects = len(outputs) > 1
        for _ in range(batch):
            if objects:
                writer.start(False)
            writer.single_line = True
            for alias, array in outputs.items():
                if objects:
                    writer.key(alias)
                offsets[alias] = _walk(writer, texts[alias], array.shape, 1, offsets[alias])
            writer.single_line = False
            if objects:
                writer.end()
        writer.end()
    else:
        writer.key("outputs")
        objects = len(outputs) > 1
        if objects:
            writer.start(False)
        for alias, array in outputs.items():
            if objects:
                writer.key(alias)
            _walk(writer, _texts(array, alias), array.shape, 0, 0)
        if objects:
            writer.end()
    writer.end()
    return writer.text()


def _walk(writer, texts, shape, dim, offset):
    if dim > len(shape) - 1:
        _write_one(writer, texts, offset)
        return offset + 1
    writer.start(True)
    for _ in range(shape[dim]):
        offset = _walk(writer, texts, shape, dim + 1, offset)
    writer.end()
    return offset
