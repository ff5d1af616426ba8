"""No unsafe loading anywhere in the code: no pickle, torch.load only with weights_only=True, YAML only
with a safe loader, never trust_remote_code=True, np.load never with allow_pickle=True."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = [*sorted((REPO / "hyperllama_lib").rglob("*.py")), *sorted((REPO / "tools").glob("*.py")),
           *sorted((REPO / "benchmarks").glob("*.py"))]
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


def _name(node: ast.AST) -> str:
    """Dotted name of a call target: torch.load, yaml.load, pickle.loads, ..."""
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _kw(call: ast.Call, key: str):
    for kw in call.keywords:
        if kw.arg == key:
            return kw.value
    return None


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_calls(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            if any(n and n.split(".")[0] in ("pickle", "cPickle", "dill", "joblib", "marshal") for n in names):
                found.append(f"line {node.lineno}: imports {', '.join(n for n in names if n)}")
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        where = f"line {node.lineno}: {name}"
        if name.endswith("torch.load") and not _is_true(_kw(node, "weights_only")):
            found.append(f"{where} without weights_only=True")
        if name.endswith("yaml.load") or name.endswith("yaml.load_all"):
            loader = _kw(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if loader is None or _name(loader).split(".")[-1] not in SAFE_YAML_LOADERS:
                found.append(f"{where} without a safe Loader")
        if name.endswith("yaml.unsafe_load") or name.endswith("yaml.full_load"):
            found.append(where)
        if _is_true(_kw(node, "trust_remote_code")):
            found.append(f"{where} with trust_remote_code=True")
        if _is_true(_kw(node, "allow_pickle")):
            found.append(f"{where} with allow_pickle=True")
        if name.endswith("from_pretrained") and _kw(node, "use_safetensors") is not None \
                and not _is_true(_kw(node, "use_safetensors")):
            found.append(f"{where} with use_safetensors other than True")
    return found


@pytest.mark.parametrize("bad", [
    "import torch\ntorch.load('m.pt')",
    "import torch\ntorch.load('m.pt', weights_only=False)",
    "import yaml\nyaml.load(open('p.yaml'))",
    "import yaml\nyaml.load(s, Loader=yaml.Loader)",
    "import yaml\nyaml.unsafe_load(s)",
    "import pickle\npickle.loads(b'')",
    "from pickle import load",
    "AutoModel.from_pretrained('x', trust_remote_code=True)",
    "import numpy as np\nnp.load('a.npy', allow_pickle=True)",
])
def test_the_scanner_finds_unsafe_calls(bad):
    assert unsafe_calls(bad)


@pytest.mark.parametrize("good", [
    "import torch\ntorch.load('m.pt', weights_only=True)",
    "import yaml\nyaml.safe_load(s)\nyaml.load(s, Loader=yaml.SafeLoader)",
    "AutoModel.from_pretrained('x', trust_remote_code=False, use_safetensors=True)",
])
def test_the_scanner_accepts_safe_calls(good):
    assert not unsafe_calls(good)


def test_no_unsafe_loading_in_the_code():
    assert len(SOURCES) > 20
    problems = [f"{path.relative_to(REPO)} {p}" for path in SOURCES for p in unsafe_calls(path.read_text())]
    assert not problems, "unsafe loading:\n" + "\n".join(problems)
