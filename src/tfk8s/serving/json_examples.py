"""Classify and regress over REST, as json_tensor.cc reads and writes them.

The body is {"signature_name"?: str, "context"?: {...}, "examples": [{feature: value or list}, ...]};
each example becomes a tf.Example (an integer is an int64 feature, a number with a fraction or an
exponent a float one, a string or {"b64": ...} a bytes one; the first value fixes the feature's kind).
The answer is {"results": [[[label, score], ...], ...]} (classify) or {"results": [value, ...]} (regress).
"""
from tfk8s.serving.json_io import PrettyWriter, decimal, escape, type_name
from tfk8s.serving.json_tensor import INT64, UINT64, b64_value, format_error, is_b64
from tfk8s.serving.protocol import invalid
from tfk8s.serving.tensors import apis


def _feature_kind_error(name, kind):
    return invalid(f"Unexpected element type in feature: {name} expecting type: {kind}")


def _add_to_feature(value, name, feature):
    """AddValueToFeature: the first value fixes the feature's kind."""
    kind = feature.WhichOneof("kind")
    if value is None or isinstance(value, list) or (isinstance(value, dict) and not is_b64(value)):
        raise invalid(f"Feature: {name} has element with unexpected JSON type: {type_name(value)}")
    if isinstance(value, bool) or (isinstance(value, int) and not isinstance(value, bool)):
        if kind not in (None, "int64_list"):
            raise _feature_kind_error(name, kind.split("_")[0])
        if not isinstance(value, bool) and not -INT64 <= value < INT64:
            if 0 <= value < UINT64:
                raise invalid(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
            return _add_to_feature(float(value), name, feature)
        feature.int64_list.value.append(int(value))
    elif isinstance(value, float):
        if kind not in (None, "float_list"):
            raise _feature_kind_error(name, kind.split("_")[0])
        feature.float_list.value.append(value)
    else:
        if kind not in (None, "bytes_list"):
            raise _feature_kind_error(name, kind.split("_")[0])
        feature.bytes_list.value.append(b64_value(value) if isinstance(value, dict) else
                                        value.encode("utf-8", "surrogateescape"))


def _example(value, example):
    """MakeExampleFromJsonObject."""
    if not isinstance(value, dict):
        raise invalid(f"Example must be JSON object but got JSON {type_name(value)}")
    for name, content in value.items():
        feature = apis.feature_pb2.Feature()
        for item in content if isinstance(content, list) else [content]:
            _add_to_feature(item, name, feature)
        example.features.feature[name].CopyFrom(feature)


def examples_input(doc):
    """FillClassifyRegressRequestFromJson: the request body's Input message."""
    input_message = apis.input_pb2.Input()
    if "context" in doc:
        _example(doc["context"], input_message.example_list_with_context.context)
    if "examples" not in doc:
        raise format_error(doc, "When method is classify, key 'examples' is expected and was not found")
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise format_error(doc, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise format_error(doc, "'examples' value is an empty array")
    target = (input_message.example_list_with_context.examples if "context" in doc
              else input_message.example_list.examples)
    for value in examples:
        _example(value, target.add())
    return input_message


def classify_response(result):
    writer = PrettyWriter()
    writer.start(False)
    writer.key("results")
    writer.start(True)
    for classifications in result.classifications:
        writer.single_line = True
        writer.start(True)
        for cls in classifications.classes:
            writer.start(True)
            writer.raw(escape(cls.label))
            writer.raw(decimal(cls.score))
            writer.end()
        writer.end()
        writer.single_line = False
    writer.end()
    writer.end()
    return writer.text()


def regress_response(result):
    writer = PrettyWriter()
    writer.start(False)
    writer.key("results")
    writer.single_line = True
    writer.start(True)
    for regression in result.regressions:
        writer.raw(decimal(regression.value))
    writer.end()
    writer.single_line = False
    writer.end()
    return writer.text()
