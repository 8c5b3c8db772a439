"""YAML a command was given: its documents, or one line saying why not (UserError, exit 1).

Every YAML a user hands a command (manifests, a sweep's values file, a ConfigMap, ...) is read with `load_all`
here, which refuses what no manifest needs and what would hang or exhaust whoever walks the result:
- aliases that expand to more than MAX_ALIAS_NODES nodes (a "billion laughs": nine anchors of nine aliases
  each are a few hundred bytes and 387 million nodes to whoever walks them, or formats one in a message),
  and an alias inside the node it names (a structure that never ends);
- nesting deeper than MAX_DEPTH.
Kubernetes' own YAML decoder refuses excessive aliasing the same way (gopkg.in/yaml.v2, decode.go,
"document contains excessive aliasing"; its rule is a ratio, this one a plain bound, which is enough for files
that are read whole into memory anyway).
"""
from pathlib import Path

import yaml

from tfk8s.cli import UserError

MAX_ALIAS_NODES = 10_000  # nodes that aliases may add, per document; a real manifest's anchors add a few dozen
MAX_DEPTH = 100           # levels of nesting; a Kubernetes object's deepest field is some 20 levels down


class Refused(yaml.YAMLError):
    """A document this loader will not build; its message is the reason."""


class BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader that checks each composed document (its node graph) before building Python objects."""

    def __init__(self, stream):
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise Refused(f"is nested too deeply (more than {MAX_DEPTH} levels)")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def compose_document(self):
        node = super().compose_document()
        check_expansion(node)
        return node


def children(node):
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def check_expansion(root):
    """Refuse a node graph whose aliases expand it past MAX_ALIAS_NODES, or that contains itself.

    Iterative (a deep graph must not exhaust Python's stack), each node's expanded size computed once.
    """
    size, on_path, distinct = {}, set(), 0
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(child)] for child in children(node))
            continue
        if key in size:
            continue
        if key in on_path:
            raise Refused("has an alias inside the node it names (a structure without end)")
        on_path.add(key)
        distinct += 1
        stack.append((node, True))
        stack.extend((child, False) for child in children(node) if id(child) not in size)
    expanded = size[id(root)]
    if expanded - distinct > MAX_ALIAS_NODES:
        raise Refused(f"has aliases that expand it to {expanded:,} nodes (at most {MAX_ALIAS_NODES:,} may come "
                      "from aliases)")


def load_all(text, source, error=UserError):
    """The non-empty YAML documents of `text` (from `source`, for messages); `error` (UserError) if it cannot be
    read safely."""
    try:
        return [doc for doc in yaml.load_all(text, Loader=BoundedLoader) if doc is not None]
    except Refused as err:
        raise error(f"{source} {err}") from None
    except yaml.YAMLError as err:
        raise error(f"{source} is not valid YAML: {' '.join(str(err).split())[:500]}") from None
    except RecursionError:
        raise error(f"{source} is nested too deeply to be read") from None


def load(text, source, error=UserError):
    """The one YAML document of `text` (None if there is none)."""
    docs = load_all(text, source, error)
    if len(docs) > 1:
        raise error(f"{source} holds {len(docs)} YAML documents; expected one")
    return docs[0] if docs else None


def read_text(path, what="", error=UserError):
    """The text of `path`; a missing, unreadable or binary file is one line (`what` names what it should be)."""
    named = f"{what} {path}" if what else str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise UserError(f"cannot read {named}: {err.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise error(f"{named} is not a text file (byte {err.start} is not UTF-8)") from None


def documents(path, must_hold=None):
    """The YAML documents of `path`, empty ones skipped; a missing, unreadable, binary or malformed file is one line,
    and so is one without any document when it `must_hold` something (e.g. "a TFJob")."""
    docs = load_all(read_text(path), str(path))
    if not docs and must_hold:
        raise UserError(f"{path} is empty: it must hold {must_hold}")
    return docs
