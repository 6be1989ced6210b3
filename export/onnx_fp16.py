"""Optional step before a TensorRT build: an fp32 ONNX graph -> fp16, keeping sensitive ops fp32.

TensorRT's strongly typed networks take each layer's precision from the graph,
so lower precision is chosen here, in the ONNX file, not with builder flags.
Normalizations, softmax and the reductions / exponentials around them stay in
fp32: FastConformer in plain fp16 is known to overflow into NaN there. Graph
inputs and outputs stay fp32, so the Triton configs do not change.
"""

from __future__ import annotations

from pathlib import Path

# Ops computed in fp32 inside an otherwise fp16 graph.
KEEP_FP32_OPS: tuple[str, ...] = (
    "LayerNormalization",
    "BatchNormalization",
    "InstanceNormalization",
    "GroupNormalization",
    "Softmax",
    "LogSoftmax",
    "ReduceMean",
    "ReduceSum",
    "Pow",
    "Sqrt",
    "Exp",
    "Log",
)


def convert_to_fp16(source: Path, destination: Path, keep_fp32_ops: tuple[str, ...] = KEEP_FP32_OPS) -> Path:
    """Write an fp16 copy of ``source`` (weights beside it as external data when large)."""
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(str(source))  # external weights load from beside the file
    _retarget_float_casts(model)
    converted = float16.convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=list(keep_fp32_ops),
        check_fp16_ready=False,  # the retargeted casts look like an fp16 graph to this check
    )
    _restore_float_outputs(model, converted)
    # The converter's inferred intermediate types go stale where it retypes
    # existing Cast nodes; runtimes infer them again from the graph.
    del converted.graph.value_info[:]
    destination.parent.mkdir(parents=True, exist_ok=True)
    # The 2 GB protobuf limit: large graphs keep their weights in a side file.
    large = _serialized_size(converted) > 1_500_000_000
    onnx.save(
        converted,
        str(destination),
        save_as_external_data=large,
        all_tensors_to_one_file=True,
        location=f"{destination.name}.data",
    )
    return destination


def _serialized_size(model: object) -> int:
    try:
        return int(model.ByteSize())  # type: ignore[attr-defined]
    except (ValueError, OverflowError):  # protobuf refuses to size messages over 2 GB
        return 1 << 31


def _restore_float_outputs(source: object, converted: object) -> None:
    """Cast back to fp32 any graph output the converter left in fp16.

    keep_io_types misses outputs produced by a blocked (fp32) op: it casts them
    to fp16 for consumers and retypes the graph output. Consumers keep the fp16
    tensor; the graph output becomes a fresh fp32 cast of it.
    """
    import onnx

    float_outputs = {
        out.name for out in source.graph.output if out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # type: ignore[attr-defined]
    }
    graph = converted.graph  # type: ignore[attr-defined]
    for out in graph.output:
        if out.name not in float_outputs or out.type.tensor_type.elem_type != onnx.TensorProto.FLOAT16:
            continue
        half = f"{out.name}_fp16"
        for node in graph.node:
            node.output[:] = [half if name == out.name else name for name in node.output]
            node.input[:] = [half if name == out.name else name for name in node.input]
        graph.node.append(onnx.helper.make_node("Cast", [half], [out.name], to=onnx.TensorProto.FLOAT, name=f"{half}_to_fp32"))
        out.type.tensor_type.elem_type = onnx.TensorProto.FLOAT


def _retarget_float_casts(model: object) -> None:
    """Make the graph's own casts to fp32 (e.g. of length masks) cast to fp16.

    The converter leaves Cast(to=FLOAT) alone, which would feed fp32 into the
    fp16 ops after it. Retargeted first, the converter sees fp16 tensors and
    inserts its fp32 casts in front of the ops it keeps in fp32.
    """
    import onnx

    for node in model.graph.node:  # type: ignore[attr-defined]
        if node.op_type != "Cast":
            continue
        for attribute in node.attribute:
            if attribute.name == "to" and attribute.i == onnx.TensorProto.FLOAT:
                attribute.i = onnx.TensorProto.FLOAT16
