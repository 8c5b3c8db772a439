"""JSON in and out, byte for byte as TensorFlow Serving's REST API reads and writes it (rapidjson 1.1.0).

Reading (json_tensor.cc ParseJson): the first complete value counts and any
bytes after it are ignored; NaN and Infinity are numbers; strings are bytes
(not checked as UTF-8); nesting has no depth limit. Errors are rapidjson's
texts with the offset. Writing: rapidjson's PrettyWriter (4-space indent,
arrays on one line where TensorFlow Serving asks for it), floats in the
shortest form that reads back as the same float (WriteDecimal).
"""
import json
import math
import re

import numpy as np

from tfk8s.serving.protocol import invalid

DEBUG_LIMIT = 256  # json_tensor.cc kMaxJsonDebugStringBytes
_PYTHON_TO_RAPIDJSON = [
    ("Expecting value", "Invalid value."),
    ("Expecting property name", "Missing a name for object member."),
    ("Expecting ':' delimiter", "Missing a colon after a name of object member."),
    ("Unterminated string", "Missing a closing quotation mark in string."),
    ("Invalid \\escape", "Invalid escape character in string."),
    ("Invalid \\uXXXX escape", "Incorrect hex digit after \\u escape in string."),
    ("Invalid control character", "Invalid encoding in string."),
]


def _innermost_open(text, pos):
    """'[' or '{': the bracket still open at `pos`, to tell rapidjson's two "Missing a comma" errors apart."""
    stack, i, in_string = [], 0, False
    while i < pos:
        c = text[i]
        if in_string:
            if c == "\\":
                i += 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            stack.append(c)
        elif c in "]}" and stack:
            stack.pop()
        i += 1
    return stack[-1] if stack else "["


def _syntax_error(text, err):
    for python, rapidjson in _PYTHON_TO_RAPIDJSON:
        if err.msg.startswith(python):
            return invalid(f"JSON Parse error: {rapidjson} at offset: {err.pos}")
    if err.msg.startswith("Expecting ',' delimiter"):
        which = "Missing a comma or '}' after an object member." if _innermost_open(text, err.pos) == "{" \
            else "Missing a comma or ']' after an array element."
        return invalid(f"JSON Parse error: {which} at offset: {err.pos}")
    return invalid(f"JSON Parse error: Invalid value. at offset: {err.pos}")


def parse(body):
    """Request body bytes -> the JSON value; INVALID_ARGUMENT with rapidjson's message when it is not JSON."""
    if not body:
        raise invalid("JSON Parse error: The document is empty")
    text = body.decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    start = len(text) - len(text.lstrip(" \t\n\r"))
    if start == len(text):
        raise invalid(f"JSON Parse error: The document is empty. at offset: {start}")
    try:
        value, end = json.JSONDecoder().raw_decode(text, start)  # kParseStopWhenDoneFlag: the rest is ignored
    except json.JSONDecodeError as err:
        raise _syntax_error(text, err) from None
    except RecursionError:
        value, end = _parse_deep(text, start)
    _refuse_lone_high_surrogates(text, end)
    return value


# A \uD800-\uDBFF escape not followed by a \uDC00-\uDFFF one. Python's json takes it as a lone surrogate;
# rapidjson 1.1.0 (reader.h ParseStringToStream) refuses it: kParseErrorStringUnicodeSurrogateInvalid at the
# escape's backslash. A lone low surrogate escape it encodes as is, and so do we.
_LONE_HIGH = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})")


def _refuse_lone_high_surrogates(text, end):
    if "\\u" not in text:
        return
    for match in _LONE_HIGH.finditer(text, 0, end):
        backslashes = len(text[:match.start()]) - len(text[:match.start()].rstrip("\\"))
        if backslashes % 2 == 0:  # the backslash is not itself escaped: it is an escape inside a string
            raise invalid(f"JSON Parse error: The surrogate pair in string is invalid. at offset: {match.start()}")


_TOKEN = re.compile(r'\s*(?:(?P<open>[\[{])|(?P<close>[\]}])|(?P<comma>,)|(?P<colon>:)|'
                    r'(?P<string>"(?:[^"\\]|\\.)*")|(?P<atom>-?(?:Infinity|NaN|\d[\d.eE+-]*|true|false|null)))')


def _parse_deep(text, pos):
    """The same parse without recursion, for documents nested deeper than Python's json module goes."""
    stack, key, value = [], None, None
    decoder = json.JSONDecoder()
    while True:
        match = _TOKEN.match(text, pos)
        if not match:
            raise invalid(f"JSON Parse error: Invalid value. at offset: {pos}")
        pos = match.end()
        kind = match.lastgroup
        if kind == "open":
            stack.append(([] if match["open"] == "[" else {}, key))
            key = None
            continue
        if kind in ("comma", "colon"):
            continue
        if kind == "close":
            value, key = stack.pop()
        elif kind == "string" and stack and isinstance(stack[-1][0], dict) and key is None:
            key = decoder.decode(match["string"])
            continue
        else:
            try:
                value = decoder.decode(match[kind])
            except json.JSONDecodeError:
                raise invalid(f"JSON Parse error: Invalid value. at offset: {match.start(kind)}") from None
        if not stack:
            return value, pos
        container = stack[-1][0]
        if isinstance(container, list):
            container.append(value)
        else:
            container[key] = value
            key = None


def type_name(value):
    """rapidjson's name for a value's type, as error messages print it."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


# ---------------------------------------------------------------- writing

def escape(text):
    """rapidjson's Writer::WriteString: quotes, backslashes and control characters escaped, the rest as is."""
    out = ['"']
    for c in text:
        o = ord(c)
        if c == '"':
            out.append('\\"')
        elif c == "\\":
            out.append("\\\\")
        elif o < 0x20:
            out.append({8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r"}.get(o, f"\\u{o:04X}"))
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def decimal(value, digits=9):
    """json_tensor.cc WriteDecimal: %g, or max_digits10 digits when %g does not read back; '.0' when integral."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = f"{value:g}"
    back = np.float32(text) if digits == 9 else float(text)
    if back != value:
        text = f"{value:.{digits}g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def _number(value):
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "-Infinity" if value < 0 else "Infinity"
        text = repr(value).replace("e+", "e")
        return text
    return str(value)


class PrettyWriter:
    """rapidjson's PrettyWriter (indent 4) and its kFormatSingleLineArray option, event by event."""

    def __init__(self, limit=None):
        self.out, self.levels, self.single_line, self.limit = [], [], False, limit
        self.size = 0

    def _put(self, text):
        self.out.append(text)
        self.size += len(text)

    def full(self):
        return self.limit is not None and self.size >= self.limit

    def _indent(self):
        self._put(" " * (4 * len(self.levels)))

    def _prefix(self):
        if not self.levels:
            return
        level = self.levels[-1]
        if level[0]:  # in an array
            if level[1] > 0:
                self._put(", " if self.single_line else ",")
            if not self.single_line:
                self._put("\n")
                self._indent()
        else:
            if level[1] > 0:
                self._put(",\n" if level[1] % 2 == 0 else ": ")
            else:
                self._put("\n")
            if level[1] % 2 == 0:
                self._indent()
        level[1] += 1

    def raw(self, text):
        if not self.full():
            self._prefix()
            self._put(text)

    def key(self, name):
        self.raw(escape(name))

    def start(self, array):
        if not self.full():
            self._prefix()
            self.levels.append([array, 0])
            self._put("[" if array else "{")

    def end(self):
        if self.full():
            return
        array, count = self.levels.pop()
        if count and not (array and self.single_line):
            self._put("\n")
            self._indent()
        self._put("]" if array else "}")

    def value(self, value):
        """Any parsed JSON value (debug strings; the REST handler writes tensors itself)."""
        if self.full():
            return
        if isinstance(value, dict):
            self.start(False)
            for k, v in value.items():
                self.key(k)
                self.value(v)
            self.end()
        elif isinstance(value, list):
            self.start(True)
            for v in value:
                self.value(v)
            self.end()
        elif value is None or isinstance(value, bool):
            self.raw({None: "null", True: "true", False: "false"}[value])
        elif isinstance(value, str):
            self.raw(escape(value))
        else:
            self.raw(_number(value))

    def text(self):
        return "".join(self.out)


def debug_string(value):
    """json_tensor.cc JsonValueToDebugString: single-line arrays, cut once 256 bytes are written."""
    writer = PrettyWriter(limit=DEBUG_LIMIT)
    writer.single_line = True
    writer.value(value)
    return writer.text()


def error_body(message):
    """{"error": message} as TensorFlow Serving writes it (MakeJsonFromStatus)."""
    return '{\n    "error": ' + escape(message) + "\n}"
