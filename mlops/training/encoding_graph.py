"""The feature encoding as ONNX nodes, put in front of the exported network.

The network is exported from torch with one float input, ``encoded``; this module replaces
that input with the raw ones (``features``: numbers with NaN for nulls, ``categories``:
strings) and adds the nodes that compute ``encoded`` from them: nulls replaced by the
train medians, each category looked up (ai.onnx.ml LabelEncoder, unknown -> 0) and turned
into its one-hot row. Serving then needs no preprocessing code, and any ONNX runtime gives
the same encoding as ``encoding.encode``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mlops.data.encoding import CATEGORIES, NUMBERS, FeatureEncoding

if TYPE_CHECKING:
    import onnx

ENCODED = "encoded"  # the network's input, now computed inside the graph
ML_DOMAIN, ML_OPSET = "ai.onnx.ml", 3
_PREFIX = "encoding/"  # names of the added values, apart from the exporter's


def prepend_encoding(model: onnx.ModelProto, encoding: FeatureEncoding) -> onnx.ModelProto:
    """``model`` (input ``encoded``) taking raw values instead; a new proto."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    batch = _batch_dim(graph)
    old = [value for value in graph.input if value.name == ENCODED]
    if len(old) != 1:
        raise ValueError(f"the network must have one input {ENCODED!r}")
    graph.input.remove(old[0])
    nodes, initializers, parts, inputs = [], [], [], []
    if encoding.numeric:
        inputs.append(helper.make_tensor_value_info(
            NUMBERS, TensorProto.FLOAT, [batch, len(encoding.numeric)]))
        fill = numpy_helper.from_array(np.asarray([encoding.fill], np.float32), _PREFIX + "fill")
        initializers.append(fill)
        nodes += [helper.make_node("IsNaN", [NUMBERS], [_PREFIX + "null"]),
                  helper.make_node("Where", [_PREFIX + "null", fill.name, NUMBERS],
                                   [_PREFIX + "numbers"])]
        parts.append(_PREFIX + "numbers")
    if encoding.categorical:
        inputs.append(helper.make_tensor_value_info(
            CATEGORIES, TensorProto.STRING, [batch, len(encoding.categorical)]))
        flat = numpy_helper.from_array(np.asarray([-1], np.int64), _PREFIX + "flat")
        initializers.append(flat)
        for j, (column, known) in enumerate(
                zip(encoding.categorical, encoding.categories, strict=True)):
            added, tensors = _one_hot_nodes(j, column, known, flat.name)
            nodes += added
            initializers += tensors
            parts.append(f"{_PREFIX}{j}/one_hot")
    nodes.append(helper.make_node("Concat", parts, [ENCODED], axis=1))
    graph.input.extend(inputs)
    graph.initializer.extend(initializers)
    network = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes, *network])
    # The exporter may declare the ML domain at version 1, whose LabelEncoder differs; the
    # network itself uses none of its operators.
    for entry in [e for e in out.opset_import if e.domain == ML_DOMAIN]:
        out.opset_import.remove(entry)
    out.opset_import.append(helper.make_opsetid(ML_DOMAIN, ML_OPSET))
    return out


def _one_hot_nodes(j: int, column: str, known: list[str], flat: str
                   ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """categories[:, j] -> code (0: unknown) -> row j of an identity matrix."""
    from onnx import helper, numpy_helper

    name = f"{_PREFIX}{j}/"
    tensors = [numpy_helper.from_array(np.asarray([j], np.int64), name + "start"),
               numpy_helper.from_array(np.asarray([j + 1], np.int64), name + "end"),
               numpy_helper.from_array(np.asarray([1], np.int64), name + "axis"),
               numpy_helper.from_array(np.eye(len(known) + 1, dtype=np.float32),
                                       name + "identity")]
    nodes = [
        helper.make_node("Slice", [CATEGORIES, name + "start", name + "end", name + "axis"],
                         [name + "column"]),
        helper.make_node("Reshape", [name + "column", flat], [name + "text"]),
        helper.make_node("LabelEncoder", [name + "text"], [name + "code"], domain=ML_DOMAIN,
                         keys_strings=known, values_int64s=list(range(1, len(known) + 1)),
                         default_int64=0, name=f"{name}{column}"),
        helper.make_node("Gather", [name + "identity", name + "code"], [name + "one_hot"],
                         axis=0),
    ]
    return nodes, tensors


def _batch_dim(graph: onnx.GraphProto) -> str | int:
    """The symbolic batch dimension the exporter gave the network's input."""
    for value in graph.input:
        if value.name == ENCODED:
            dim = value.type.tensor_type.shape.dim[0]
            return dim.dim_param or dim.dim_value or "batch"
    return "batch"
