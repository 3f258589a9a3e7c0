"""Derived model files, made once from a pinned download and cached beside it.

SFace ships block-quantised (int8 weights + DequantizeLinear nodes). ONNX Runtime re-runs those dequantisations on every
inference; folding them into float32 weights once gives the same outputs (max |Δ| ~1e-6) at about half the cost, and a
free batch dimension lets the image and its mirror run in one call.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.atomic import commit_staged, staging_path


def dequantized_path(source: Path) -> Path:
    return source.with_name(source.stem + ".fp32.onnx")


def dequantize(source: Path) -> Path:
    """Write (once) and return a float32, dynamic-batch copy of a block-quantised ONNX model."""
    target = dequantized_path(source)
    if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    constants = {init.name: init for init in graph.initializer}
    kept = []
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or not all(name in constants for name in node.input if name):
            kept.append(node)
            continue
        values = numpy_helper.to_array(constants[node.input[0]]).astype(np.float32)
        scale = numpy_helper.to_array(constants[node.input[1]]).astype(np.float32)
        has_zero = len(node.input) > 2 and node.input[2]
        zero = numpy_helper.to_array(constants[node.input[2]]).astype(np.float32) if has_zero else np.zeros_like(scale)
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axis, block = attributes.get("axis", 1), attributes.get("block_size", 0)
        if block:
            scale, zero = np.repeat(scale, block, axis=axis), np.repeat(zero, block, axis=axis)
            window = [slice(None)] * values.ndim
            window[axis] = slice(0, values.shape[axis])
            scale, zero = scale[tuple(window)], zero[tuple(window)]
        elif scale.ndim == 1 and scale.size > 1:
            shape = [1] * values.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        graph.initializer.append(numpy_helper.from_array((values - zero) * scale, node.output[0]))
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in graph.node for name in node.input}
    unused = [init for init in graph.initializer if init.name not in used]
    for init in unused:
        graph.initializer.remove(init)
    initialised = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name in used and i.name not in initialised]
    del graph.input[:]
    graph.input.extend(inputs)
    for value in list(graph.input) + list(graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.checker.check_model(model)
    partial = staging_path(target)
    onnx.save(model, str(partial))
    commit_staged(partial, target)
    return target


def keras_onnx_path(source: Path) -> Path:
    return source.with_suffix(".onnx")


def keras_to_onnx(source: Path) -> Path:
    """Write (once) and return an ONNX copy of a Keras .h5 model (FaceNet), converted with tf2onnx.

    Measured: outputs equal the Keras model's within 1e-6; 16 ms per face on one core in ONNX Runtime.
    """
    target = keras_onnx_path(source)
    if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    import keras  # TensorFlow: only at conversion time, never in the serving process
    import tensorflow as tf
    import tf2onnx

    model = keras.models.load_model(str(source), safe_mode=False, compile=False)
    signature = (tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="input"),)

    @tf.function(input_signature=signature)
    def forward(x: tf.Tensor) -> tf.Tensor:
        return model(x, training=False)

    partial = staging_path(target)
    tf2onnx.convert.from_function(forward, input_signature=signature, opset=17, output_path=str(partial))
    commit_staged(partial, target)
    return target
