"""The compressed model package: ``arch.json`` + the method's payload, sized by the bytes on disk.

``arch.json`` holds ``"format": "compressed"`` (so :func:`components.packaging.load_package` sends it
here), the method, its encoding, the original :class:`~components.packaging.ModelSpec` and an index of
the raw arrays in ``weights.bin`` (no pickle, no per-tensor container overhead). Encodings:

- ``sparse``: per layer the non-zero weights (fp32) and their positions as 8-bit gaps (a gap > 255 is
  bridged by an explicit zero, as Deep Compression stores relative indices);
- ``shared``: per layer a codebook (fp32) and one index per weight, bit-packed to its width;
- ``deep``: sparse positions and codebook indices, both Huffman-coded (prune → share → Huffman);
- ``lowrank``: the factorised state dict (fp32), the ranks in ``arch.json``;
- ``ternary`` / ``binary``: 2 or 1 bits per weight and one scale per layer;
- ``int8``: a ``torch.export`` program with int8 weights (``model.pt2.xz``);
- ``onnx``: an fp32 ONNX graph (``model.onnx``) run by onnxruntime.

Everything that is not a conv/linear weight (biases, BatchNorm, the normaliser) is stored as is (fp16 in
``deep``)::

    save_deep(directory, model, spec, books)
    package_bytes(directory)                 # what compress/size_bytes reports
    model, spec = load_compressed_package(directory)
    classes, probs = model.predict_uint8(images)
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from components.compression import huffman
from components.compression.kmeans import Codebook
from components.compression.prune import weight_layers
from components.package_base import ARCH_FILE, ModelSpec, unwrap
from components.package_safety import UnsafePackage, load_program

BLOB = "weights.bin"
PROGRAM = "model.pt2.xz"  # torch.export archive, xz-compressed (its graph text dominates a small model)
ONNX_FILE = "model.onnx"
MAX_GAP = 255


def package_bytes(directory: str | Path) -> int:
    """Bytes of every file of a package (what is stored, served and downloaded)."""
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())


# --------------------------------------------------------------------------- container


def _write(directory: str | Path, method: str, encoding: str, spec: ModelSpec, arrays: dict[str, np.ndarray],
           meta: dict[str, Any] | None = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    index, offset = {}, 0
    with open(directory / BLOB, "wb") as f:
        for key, a in arrays.items():
            a = np.ascontiguousarray(a)
            f.write(a.tobytes())
            index[key] = [a.dtype.str, list(a.shape), offset]
            offset += a.nbytes
    arch = {"format": "compressed", "method": method, "encoding": encoding, "spec": spec.to_dict(),
            "meta": meta or {}, "arrays": index}
    (directory / ARCH_FILE).write_text(json.dumps(arch, separators=(",", ":")))
    return directory


def read_arrays(directory: Path, index: dict[str, list]) -> dict[str, np.ndarray]:
    raw = (directory / BLOB).read_bytes()
    out = {}
    for key, (dtype, shape, offset) in index.items():
        dt = np.dtype(dtype)
        if dt.hasobject or dt.kind not in "biuf":  # raw numbers only: an object array would unpickle
            raise UnsafePackage(f"{directory / BLOB}: array {key} has dtype {dtype}; a package stores numbers only.")
        n = int(np.prod(shape)) if shape else 1
        out[key] = np.frombuffer(raw, dtype=dt, count=n, offset=offset).reshape(shape).copy()
    return out


def _dense_rest(model: nn.Module, half: bool = False) -> dict[str, np.ndarray]:
    """Every state-dict entry except conv/linear weights, as ``dense/<key>`` (float ones fp16 if ``half``)."""
    model = unwrap(model)
    skip = {f"net.{name}.weight" for name, _ in weight_layers(model.net)}
    out = {f"dense/{k}": v.detach().cpu().numpy() for k, v in model.state_dict().items() if k not in skip}
    return {k: v.astype(np.float16) if half and v.dtype == np.float32 else v for k, v in out.items()}


def _state_from(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k[len("dense/"):]: torch.from_numpy(v.astype(np.float32) if v.dtype == np.float16 else v)
            for k, v in arrays.items() if k.startswith("dense/")}


def _pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned ints < 2**bits → a byte array of ``ceil(n·bits/8)`` bytes (MSB first)."""
    v = values.astype(np.int64).ravel()
    planes = (v[:, None] >> np.arange(bits - 1, -1, -1)[None, :]) & 1
    return np.packbits(planes.astype(np.uint8).ravel())


def _unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    planes = np.unpackbits(packed)[:count * bits].reshape(count, bits).astype(np.int64)
    return (planes << np.arange(bits - 1, -1, -1)[None, :]).sum(1)


def _gaps(flat_nonzero: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions → (8-bit gaps, position of each entry) with explicit fillers when a gap exceeds 255."""
    gaps, positions, prev = [], [], -1
    for p in np.nonzero(flat_nonzero)[0].tolist():
        while p - prev - 1 > MAX_GAP:  # a filler: a stored zero MAX_GAP+1 further on
            prev += MAX_GAP + 1
            gaps.append(MAX_GAP)
            positions.append(-1 - prev)  # negative: a filler at -1-position
        gaps.append(p - prev - 1)
        positions.append(p)
        prev = p
    return np.asarray(gaps, dtype=np.uint8), np.asarray(positions, dtype=np.int64)


def _positions(gaps: np.ndarray) -> np.ndarray:
    return np.cumsum(gaps.astype(np.int64) + 1) - 1


# --------------------------------------------------------------------------- encoders


def save_sparse(directory, model: nn.Module, spec: ModelSpec, method: str = "prune") -> Path:
    """Non-zero weights (fp32) + 8-bit gaps per layer."""
    arrays = _dense_rest(model)
    for name, m in weight_layers(unwrap(model).net):
        w = m.weight.detach().cpu().numpy().ravel()
        gaps, pos = _gaps(w != 0)
        arrays[f"gaps/{name}"] = gaps
        arrays[f"values/{name}"] = np.where(pos >= 0, w[np.clip(pos, 0, None)], 0).astype(np.float32)
    return _write(directory, method, "sparse", spec, arrays)


def save_shared(directory, model: nn.Module, spec: ModelSpec, books: dict[str, Codebook], method: str = "kmeans") -> Path:
    """A codebook and bit-packed indices per layer (index 0 = a pruned zero when the layer has any)."""
    arrays, meta = _dense_rest(model), {}
    for name, book in books.items():
        symbols = book.indices.numpy().ravel() + 1  # 0 = pruned
        alphabet = len(book.centroids) + 1 if (symbols == 0).any() else len(book.centroids)
        shift = 0 if alphabet > len(book.centroids) else 1
        bits = max(1, math.ceil(math.log2(alphabet)))
        arrays[f"codebook/{name}"] = book.centroids.numpy().astype(np.float32)
        arrays[f"indices/{name}"] = _pack_bits(symbols - shift, bits)
        meta[name] = {"bits": bits, "shift": shift}
    return _write(directory, method, "shared", spec, arrays, {"layers": meta})


def save_deep(directory, model: nn.Module, spec: ModelSpec, books: dict[str, Codebook], method: str = "deep") -> Path:
    """Prune → share → Huffman: gap and index streams of all layers, each Huffman-coded once; biases and
    BatchNorm in fp16 (at ~10x, fp32 copies of them would be a third of the package)."""
    arrays, layers = _dense_rest(model, half=True), {}
    all_gaps, all_symbols = [], []
    for name, book in books.items():
        idx = book.indices.numpy().ravel()
        gaps, pos = _gaps(idx >= 0)
        symbols = np.where(pos >= 0, idx[np.clip(pos, 0, None)] + 1, 0)  # 0 = filler zero
        arrays[f"codebook/{name}"] = book.centroids.numpy().astype(np.float32)
        layers[name] = len(gaps)
        all_gaps.append(gaps)
        all_symbols.append(symbols)
    k = max((len(b.centroids) for b in books.values()), default=0) + 1
    gap_data, gap_lengths = huffman.encode(np.concatenate(all_gaps), MAX_GAP + 1)
    sym_data, sym_lengths = huffman.encode(np.concatenate(all_symbols), k)
    arrays.update({"huffman/gaps": np.frombuffer(gap_data, np.uint8), "huffman/gap_lengths": gap_lengths,
                   "huffman/symbols": np.frombuffer(sym_data, np.uint8), "huffman/symbol_lengths": sym_lengths})
    return _write(directory, method, "deep", spec, arrays, {"layers": layers})


def save_lowrank(directory, model: nn.Module, spec: ModelSpec, ranks: dict[str, int], method: str = "lowrank") -> Path:
    arrays = {f"dense/{k}": v.detach().cpu().numpy() for k, v in unwrap(model).state_dict().items()}
    return _write(directory, method, "lowrank", spec, arrays, {"ranks": ranks})


def save_codes(directory, model: nn.Module, spec: ModelSpec, codes: dict[str, tuple[torch.Tensor, float]],
               method: str) -> Path:
    """Binary ({-1,1}: 1 bit) or ternary ({-1,0,1}: 2 bits) codes and one scale per layer."""
    ternary = any(bool((c == 0).any()) for c, _ in codes.values()) or method == "ternary"
    bits = 2 if ternary else 1
    arrays, scales = _dense_rest(model), {}
    for name, (c, alpha) in codes.items():
        symbols = c.numpy().ravel().astype(np.int64) + 1 if ternary else (c.numpy().ravel() > 0).astype(np.int64)
        arrays[f"codes/{name}"] = _pack_bits(symbols, bits)
        scales[name] = alpha
    return _write(directory, method, "ternary" if ternary else "binary", spec, arrays, {"scales": scales})


def save_int8(directory, program, spec: ModelSpec, example: torch.Tensor, method: str) -> Path:
    directory = _write(directory, method, "int8", spec, {}, {"example_shape": list(example.shape)})
    import io
    import lzma

    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    (directory / PROGRAM).write_bytes(lzma.compress(buffer.getvalue(), preset=9))
    (directory / BLOB).unlink()
    return directory


def save_onnx(directory, model: nn.Module, spec: ModelSpec, example: torch.Tensor, method: str = "onnx") -> Path:
    from components.compression import onnx

    directory = _write(directory, method, "onnx", spec, {})
    (directory / BLOB).unlink()
    onnx.export(model, example, directory / ONNX_FILE)
    return directory


# --------------------------------------------------------------------------- loading


def load_compressed_package(directory: str | Path) -> tuple[nn.Module, ModelSpec]:
    """(a model with ``forward`` (float NCHW → logits) and ``predict_uint8``, its ModelSpec)."""
    directory = Path(directory)
    arch = json.loads((directory / ARCH_FILE).read_text())
    spec, encoding, meta = ModelSpec.from_dict(arch["spec"]), arch["encoding"], arch["meta"]
    if encoding == "int8":
        from components.compression import quantize

        example = torch.rand(*meta["example_shape"])
        import lzma

        # The program's dequantize/quantize nodes are torch's quantized_decomposed ops: register them
        # before deserialising, or a fresh process (mlflow models serve) cannot resolve them.
        importlib.import_module("torch.ao.quantization.fx._decomposed")

        # Checked before torch.export.load sees it: a crafted archive could otherwise run code (package_safety).
        program = load_program(lzma.decompress((directory / PROGRAM).read_bytes()), str(directory / PROGRAM))
        return GraphClassifier(quantize.runtime(program, example), spec.in_channels), spec
    if encoding == "onnx":
        from components.compression import onnx
        from components.package_safety import check_onnx

        check_onnx(directory / ONNX_FILE)
        return GraphClassifier(onnx.session(directory / ONNX_FILE, torch.get_num_threads()), spec.in_channels), spec
    arrays = read_arrays(directory, arch["arrays"])
    state = _state_from(arrays)
    model = spec.build()
    if encoding == "lowrank":
        from components.compression.lowrank import factorise_

        factorise_(model.net, meta["ranks"])
    else:
        shapes = {f"net.{name}.weight": m.weight.shape for name, m in weight_layers(model.net)}
        state.update(_DECODERS[encoding](arrays, meta, shapes))
    model.load_state_dict(state)
    return model.eval(), spec


def _decode_sparse(arrays, meta, shapes) -> dict[str, torch.Tensor]:
    out = {}
    for key, shape in shapes.items():
        name = key[len("net."):-len(".weight")]
        w = np.zeros(int(np.prod(shape)), dtype=np.float32)
        w[_positions(arrays[f"gaps/{name}"])] = arrays[f"values/{name}"]
        out[key] = torch.from_numpy(w).view(shape)
    return out


def _decode_shared(arrays, meta, shapes) -> dict[str, torch.Tensor]:
    out = {}
    for key, shape in shapes.items():
        name = key[len("net."):-len(".weight")]
        info, book = meta["layers"][name], arrays[f"codebook/{name}"]
        symbols = _unpack_bits(arrays[f"indices/{name}"], info["bits"], int(np.prod(shape))) + info["shift"]
        table = np.concatenate([[0.0], book]).astype(np.float32)
        out[key] = torch.from_numpy(table[symbols]).view(shape)
    return out


def _decode_deep(arrays, meta, shapes) -> dict[str, torch.Tensor]:
    counts = meta["layers"]
    total = sum(counts.values())
    gaps = huffman.decode(arrays["huffman/gaps"].tobytes(), arrays["huffman/gap_lengths"], total)
    symbols = huffman.decode(arrays["huffman/symbols"].tobytes(), arrays["huffman/symbol_lengths"], total)
    out, start = {}, 0
    for key, shape in shapes.items():
        name = key[len("net."):-len(".weight")]
        n = counts[name]
        w = np.zeros(int(np.prod(shape)), dtype=np.float32)
        table = np.concatenate([[0.0], arrays[f"codebook/{name}"]]).astype(np.float32)
        w[_positions(gaps[start:start + n])] = table[symbols[start:start + n]]
        out[key] = torch.from_numpy(w).view(shape)
        start += n
    return out


def _decode_codes(arrays, meta, shapes, bits: int) -> dict[str, torch.Tensor]:
    out = {}
    for key, shape in shapes.items():
        name = key[len("net."):-len(".weight")]
        symbols = _unpack_bits(arrays[f"codes/{name}"], bits, int(np.prod(shape)))
        signs = symbols - 1 if bits == 2 else symbols * 2 - 1
        out[key] = torch.from_numpy((signs * meta["scales"][name]).astype(np.float32)).view(shape)
    return out


_DECODERS: dict[str, Callable] = {
    "sparse": _decode_sparse, "shared": _decode_shared, "deep": _decode_deep,
    "ternary": lambda a, m, s: _decode_codes(a, m, s, 2), "binary": lambda a, m, s: _decode_codes(a, m, s, 1),
}


class GraphClassifier(nn.Module):
    """A compiled or foreign graph (int8 program, onnxruntime session) with the classifier's interface.

    The graph holds the normaliser, so like :class:`~components.models.ImageClassifier` it takes float
    NCHW images in [0, 1] (``forward``) or raw uint8 images (``predict_uint8``).
    """

    def __init__(self, run: Callable[[torch.Tensor], torch.Tensor], in_channels: int):
        super().__init__()
        # Not a registered submodule: an exported graph refuses .train()/.eval(), which callers may use.
        object.__setattr__(self, "run", run)
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.run(x.contiguous())

    def predict_uint8(self, images) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.as_tensor(images)
        if x.dtype != torch.uint8:
            raise ValueError(f"predict_uint8 expects uint8 images, got {x.dtype}")
        if x.ndim == 3:
            x = x.unsqueeze(-1)
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(f"expected images of shape (N,H,W) or (N,H,W,{self.in_channels}), got {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        probs = torch.softmax(self(x).float(), dim=1)
        return probs.argmax(dim=1), probs
