"""Model folders on disk: checks, tensor names and shapes, and safetensors files read and written
one tensor at a time.

A model folder is what save_pretrained writes: config.json, model.safetensors (or shards listed in
model.safetensors.index.json) and usually the tokenizer's files. Whoever reads one, a folder that
is missing, incomplete or corrupted is a ModelFolderError naming the folder or file.
"""
from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError, safe_open

from ..errors import ModelFolderError

LLAMA_MODEL_TYPES = ("llama", "hyperllama")
# safetensors' dtype names
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool, "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64,
          "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}
_DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
# A tokenizer folder has its settings and its vocabulary; settings without any vocabulary file are a
# damaged tokenizer (deleting the settings alone is caught by the manifest's hashes).
TOKENIZER_CONFIG = "tokenizer_config.json"
TOKENIZER_VOCAB_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
# The files that decide how text becomes ids (two folders with the same ones tokenize alike) ...
TOKENIZER_CONTENT_FILES = TOKENIZER_VOCAB_FILES + ("merges.txt",)
# ... and every file of a saved tokenizer, copied along when a folder is derived from another.
TOKENIZER_FILES = TOKENIZER_CONTENT_FILES + (
    TOKENIZER_CONFIG, "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "chat_template.json",
)


# ---------------------------------------------------------------- checks

def read_config(folder: str | Path) -> dict:
    """The parsed config.json of a save_pretrained folder (any architecture)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"{folder}: model folder does not exist")
    path = folder / "config.json"
    if not path.is_file():
        raise ModelFolderError(f"{folder}: no config.json (not a save_pretrained folder)")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFolderError(f"{folder}: config.json is not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ModelFolderError(f"{folder}: config.json is not a JSON object")
    return config


def check_safetensors(path: str | Path) -> None:
    """Check a safetensors file's header against its size (catches truncation and a damaged header;
    bit flips inside the tensor data are caught by the manifest's sha256, not here)."""
    path = Path(path)
    bad = f"{path}: truncated or corrupted safetensors file"
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < n <= size - 8:
            raise ModelFolderError(f"{bad} ({size} bytes, header length {n}); redo the step that wrote it")
        try:
            header = json.loads(f.read(n))
            end = 0
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                start, stop = info["data_offsets"]
                dtype = DTYPES.get(info["dtype"])
                if dtype is not None and stop - start != math.prod(info["shape"]) * dtype.itemsize:
                    raise ValueError(f"tensor {name} has the wrong byte length")
                end = max(end, stop)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ModelFolderError(f"{bad} (header: {e}); redo the step that wrote it") from None
    if 8 + n + end != size:
        raise ModelFolderError(f"{bad} ({size} bytes, the header describes {8 + n + end}); "
                               "redo the step that wrote it")


def check_model_folder(path: str | Path, require_tokenizer: bool = False) -> dict:
    """Validate a Llama-architecture model folder; return its parsed config.json.

    Checks config.json, every safetensors file's header against its size, the shard index, and the
    tokenizer: tokenizer_config.json without a vocabulary file (tokenizer.json, ...) is a damaged
    tokenizer; a folder with neither is a weights-only folder, unless `require_tokenizer`."""
    path = Path(path)
    config = read_config(path)
    model_type = config.get("model_type")
    if model_type not in LLAMA_MODEL_TYPES:
        raise ModelFolderError(
            f"{path}: model_type {model_type!r} is not a Llama-architecture model (expected llama or hyperllama)"
        )
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise ModelFolderError(f"{path}: no *.safetensors weights (.bin pickles are never loaded)")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = set(_weight_map(index).values())
        missing = sorted(s for s in shards if not (path / s).is_file())
        if missing:
            raise ModelFolderError(f"{path}: missing weight shard(s) {', '.join(missing)}")
    for f in weights:
        check_safetensors(f)
    has_config = (path / TOKENIZER_CONFIG).is_file()
    has_vocab = any((path / name).is_file() for name in TOKENIZER_VOCAB_FILES)
    if (require_tokenizer or has_config) and not (has_config and has_vocab):
        missing = TOKENIZER_CONFIG if has_vocab else " or ".join(TOKENIZER_VOCAB_FILES)
        raise ModelFolderError(f"{path}: tokenizer incomplete, no {missing}; redo the step that wrote it")
    return config


def tokenizer_hash(folder: Path) -> str | None:
    """sha256 over the tokenizer's content files (None without any): equal for folders that tokenize alike."""
    digest = hashlib.sha256()
    found = False
    for fname in TOKENIZER_CONTENT_FILES:
        path = folder / fname
        if path.is_file():
            found = True
            digest.update(fname.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest() if found else None


# ---------------------------------------------------------------- tensor names and shapes

def _weight_map(index: Path) -> dict[str, str]:
    """Tensor name -> shard file name, from a model.safetensors.index.json."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
        return weight_map
    except (ValueError, KeyError, TypeError) as e:
        raise ModelFolderError(f"{index}: unreadable shard index ({e!r})") from None


def tensor_files(folder: Path) -> dict[str, Path]:
    """Tensor name -> safetensors file, for single-file and sharded checkpoints."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return {name: folder / fname for name, fname in _weight_map(index).items()}
    single = folder / "model.safetensors"
    if not single.is_file():
        raise ModelFolderError(f"{folder}: no model.safetensors or model.safetensors.index.json")
    return file_tensors(single)


def _open(path: Path):
    try:
        return safe_open(path, framework="pt")
    except SafetensorError as e:
        raise ModelFolderError(f"{path}: not a readable safetensors file ({e})") from None


def file_tensors(path: Path) -> dict[str, Path]:
    """Tensor name -> `path` for every tensor of one safetensors file."""
    with _open(path) as f:
        return {name: path for name in f.keys()}


def read_shapes(files: dict[str, Path]) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape, read from the safetensors headers without loading the tensors."""
    out = {}
    by_file: dict[Path, list[str]] = {}
    for name, path in files.items():
        by_file.setdefault(path, []).append(name)
    for path, names in by_file.items():
        with _open(path) as f:
            for name in names:
                out[name] = tuple(f.get_slice(name).get_shape())
    return out


def tensor_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Read names and shapes from the safetensors headers without loading the tensors."""
    return read_shapes(tensor_files(folder))


# ---------------------------------------------------------------- streaming reads and writes

def write_safetensors(path: Path, shapes: dict[str, tuple[int, ...]], dtype: torch.dtype,
                      tensors: Iterator[tuple[str, torch.Tensor]]) -> None:
    """Write a safetensors file whose header is known up front, one tensor at a time.

    `tensors` must yield exactly the names of `shapes`, in order, with those shapes and `dtype`.
    """
    size = dtype.itemsize
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes.items():
        end = offset + math.prod(shape) * size
        header[name] = {"dtype": _DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, end]}
        offset = end
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the format aligns the data to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for (name, tensor), (want, shape) in zip(tensors, shapes.items(), strict=True):
            if name != want or tuple(tensor.shape) != shape or tensor.dtype != dtype:
                raise RuntimeError(f"writer got {name} {list(tensor.shape)} {tensor.dtype}, "
                                   f"expected {want} {list(shape)} {dtype}")
            f.write(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().data)


class SafetensorsReader:
    """Reads tensors of a safetensors file with plain file reads into fresh tensors.

    safe_open maps the file into memory, and every page it touches stays in this process's resident
    memory while the file is open; reading into our own buffers keeps the resident memory to the
    tensors in use. The header is trusted: check the file first (safe_open, or `check_safetensors`).
    """

    def __init__(self, path: Path) -> None:
        self.file = open(path, "rb")
        (size,) = struct.unpack("<Q", self.file.read(8))
        self.header = json.loads(self.file.read(size))
        self.start = 8 + size

    def get_tensor(self, name: str) -> torch.Tensor:
        info = self.header[name]
        begin, end = info["data_offsets"]
        tensor = torch.empty(info["shape"], dtype=DTYPES[info["dtype"]])
        self.file.seek(self.start + begin)
        if self.file.readinto(tensor.reshape(-1).view(torch.uint8).numpy()) != end - begin:
            raise ModelFolderError(f"{self.file.name}: truncated tensor {name}")
        return tensor

    def close(self) -> None:
        self.file.close()
