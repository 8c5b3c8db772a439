"""Classify, Regress and MultiInference, as TensorFlow Serving runs them (classifier.cc, regressor.cc,
multi_inference.cc).

They take tf.Examples (an Input message), serialise them into one string
tensor fed to the signature's input `inputs`, and read `classes`/`scores`
(classify) or `outputs` (regress). A signature qualifies by its shape, not by
its method name (TensorFlow Serving's --enable_signature_method_name_check is
off by default); MultiInference asks for the method name.
"""
import numpy as np
from google.protobuf import text_format

from tfk8s.serving.protocol import DEFAULT_SIGNATURE, Code, ServingError, invalid
from tfk8s.serving.signatures import shape_text
from tfk8s.serving.tensors import DT

CLASSIFY, REGRESS = "tensorflow/serving/classify", "tensorflow/serving/regress"


def _debug(definition):
    return text_format.MessageToString(definition)


def serialized_examples(input_message):
    """Input -> 1-D array of serialised tf.Examples (the context's bytes first, when there is one)."""
    kind = input_message.WhichOneof("kind")
    if kind == "example_list":
        examples = [e.SerializeToString() for e in input_message.example_list.examples]
    elif kind == "example_list_with_context":
        with_context = input_message.example_list_with_context
        context = with_context.context.SerializeToString()
        examples = [context + e.SerializeToString() for e in with_context.examples]
    else:
        examples = []
    if not examples:
        raise invalid("Input is empty.")
    return np.array(examples, dtype=object)


def check_classification(definition):
    """PreProcessClassification: one input `inputs`, one or two outputs among `classes` and `scores`."""
    if len(definition.inputs) != 1:
        raise invalid("Expected one input Tensor.")
    if len(definition.outputs) not in (1, 2):
        raise invalid(f"Expected one or two output Tensors, found {len(definition.outputs)}")
    if "inputs" not in definition.inputs:
        raise invalid(f"No classification inputs found in SignatureDef: {_debug(definition)}")
    if "classes" not in definition.outputs and "scores" not in definition.outputs:
        raise invalid('Expected classification signature outputs to contain at least one of "classes" or '
                      f'"scores". Signature was: {_debug(definition)}')


def check_regression(definition):
    """PreProcessRegression: one input `inputs`, one output `outputs`."""
    if len(definition.inputs) != 1:
        raise invalid("Expected one input Tensor.")
    if len(definition.outputs) != 1:
        raise invalid("Expected one output Tensor.")
    if "inputs" not in definition.inputs:
        raise invalid(f"No regression inputs found in SignatureDef: {_debug(definition)}")
    if "outputs" not in definition.outputs:
        raise invalid(f"No regression outputs found in SignatureDef: {_debug(definition)}")


def _dt(array):
    return DT.DT_STRING if array.dtype == object else {
        np.dtype(np.float32): DT.DT_FLOAT, np.dtype(np.float64): DT.DT_DOUBLE, np.dtype(np.int64): DT.DT_INT64,
        np.dtype(np.int32): DT.DT_INT32}.get(array.dtype, DT.DT_INVALID)


def classification_result(outputs, num_examples, result):
    """PostProcessClassificationResult: the outputs' checks, then one list of (label, score) per example."""
    classes, scores = outputs.get("classes"), outputs.get("scores")
    for name, tensor, dtype in (("classes", classes, DT.DT_STRING), ("scores", scores, DT.DT_FLOAT)):
        if tensor is None:
            continue
        if tensor.ndim != 2:
            raise invalid(f"Expected Tensor shape: [batch_size num_classes] but got {shape_text(tensor.shape)}")
        if _dt(tensor) != dtype:
            raise invalid(f"Expected {name} Tensor of {DT.DataType.Name(dtype)}. Got: "
                          f"{DT.DataType.Name(_dt(tensor))}")
        if tensor.shape[0] != num_examples:
            raise invalid(f"Expected {name} output batch size of {num_examples}. Got: {tensor.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid(f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. "
                      f"{scores.shape[1]}")
    num_classes = (classes if classes is not None else scores).shape[1]
    for i in range(num_examples):
        classifications = result.classifications.add()
        for c in range(num_classes):
            cls = classifications.classes.add()
            if classes is not None:
                cls.label = classes[i, c].decode("utf-8", "surrogateescape") if isinstance(classes[i, c], bytes) \
                    else str(classes[i, c])
            if scores is not None:
                cls.score = float(scores[i, c])


def regression_result(outputs, num_examples, result):
    """PostProcessRegressionResult."""
    tensor = outputs["outputs"]
    if not (tensor.ndim == 1 or (tensor.ndim == 2 and tensor.shape[1] == 1)):
        raise invalid("Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
                      f"{shape_text(tensor.shape)}")
    if tensor.shape[0] != num_examples:
        raise invalid(f"Input batch size did not match output batch size: {num_examples} vs. {tensor.shape[0]}")
    if _dt(tensor) != DT.DT_FLOAT:
        raise invalid(f"Expected output Tensor of DT_FLOAT.  Got: {DT.DataType.Name(_dt(tensor))}")
    for value in tensor.reshape(-1):
        result.regressions.add().value = float(value)


def _run(loaded, name, examples, cancelled):
    signature = loaded.signatures.get(name)
    if signature is None:
        raise invalid(f"No signature was found with the name: {name}")
    return signature.run({"inputs": examples}, signature.outputs, cancelled)


def _signature_def(loaded, name, check, method, what):
    """GetClassificationSignatureDef / GetRegressionSignatureDef: the method name when
    --enable_signature_method_name_check, else the signature's shape."""
    definition = loaded.signature_defs.signature_def.get(name)
    if definition is None or name not in loaded.signatures:
        raise invalid(f"No signature was found with the name: {name}")
    if loaded.method_name_check:
        if definition.method_name != method:
            raise invalid(f"Expected {what} signature method_name to be {method}. Was: {definition.method_name}")
    else:
        check(definition)
    return definition


def _infer(loaded, signature_name, input_message, result, cancelled, check, post):
    name = signature_name or DEFAULT_SIGNATURE
    if check is check_classification:
        _signature_def(loaded, name, check, CLASSIFY, "classification")
    else:
        _signature_def(loaded, name, check, REGRESS, "regression")
    examples = serialized_examples(input_message)
    post(_run(loaded, name, examples, cancelled), len(examples), result)
    return name


def classify(loaded, signature_name, input_message, result, cancelled=None):
    """Fill the ClassificationResult of `input_message`; returns the signature name the response reports."""
    return _infer(loaded, signature_name, input_message, result, cancelled, check_classification,
                  classification_result)


def regress(loaded, signature_name, input_message, result, cancelled=None):
    """Fill the RegressionResult of `input_message`; returns the signature name the response reports."""
    return _infer(loaded, signature_name, input_message, result, cancelled, check_regression, regression_result)


def multi_inference(server, request, response, make_spec, cancelled=None):
    """MultiInference: several classify/regress signatures of one model on the same examples."""
    first = request.tasks[0].model_spec if request.tasks else None
    loaded = server.resolve(first)  # no task: an empty spec, "ModelSpec has no name specified."
    seen = set()
    for task in request.tasks:
        if not task.model_spec.name:
            raise invalid("Found ModelSpec with an empty model name.")
        if task.model_spec.name != first.name:
            raise invalid("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
        name = task.model_spec.signature_name or DEFAULT_SIGNATURE
        if name in seen:
            raise invalid(f"Duplicate evaluation of signature: {name}")
        seen.add(name)
        definition = loaded.signature_defs.signature_def.get(name)
        if definition is None or name not in loaded.signatures:
            raise invalid(f"Requested signature not found in model graph: {name}")
        if definition.method_name == CLASSIFY:
            check_classification(definition)
        elif definition.method_name == REGRESS:
            check_regression(definition)
        else:
            raise ServingError(Code.UNIMPLEMENTED, f"Unsupported signature method_name: {definition.method_name}")
    examples = serialized_examples(request.input)
    for task in request.tasks:
        name = task.model_spec.signature_name or DEFAULT_SIGNATURE
        outputs = _run(loaded, name, examples, cancelled)
        result = response.results.add()
        result.model_spec.CopyFrom(make_spec(task.model_spec.name, loaded.version, name))
        if loaded.signature_defs.signature_def[name].method_name == CLASSIFY:
            classification_result(outputs, len(examples), result.classification_result)
        else:
            regression_result(outputs, len(examples), result.regression_result)

