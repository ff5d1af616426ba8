"""A stand-in for the Hugging Face Hub holding small models in the authors' released formats.

Two ways to serve them: `FakeHub` replaces `huggingface_hub.snapshot_download` in this process and records
every call; `write_cache` lays them out as the Hub's local cache (models--owner--name/refs/main and
snapshots/<commit>/), which huggingface_hub itself reads with HF_HUB_OFFLINE=1 in any process (notebook
kernels included). Like the real cache, that one keys on the exact spelling of an id.

The expected ids are written out here from FACTS.md ("Released models"), not computed by the library.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx2
from huggingface_hub.errors import RepositoryNotFoundError

from hyperllama_lib.models import cloning
from hyperllama_lib.models.modeling import new_model, smollm2_config

TINY = dict(vocab_size=97, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, intermediate_size=48)
# with the Llama-3 vocabulary (128,256 ids) a narrow model stays small: 4 MB at width 8
NARROW = dict(vocab_size=128256, hidden_size=8, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=4, intermediate_size=16)
COMMIT = "0123456789abcdef0123456789abcdef01234567"
AUTO_MAP = {"AutoConfig": "configuration_hyperllama.HyperLlamaConfig",
            "AutoModelForCausalLM": "modeling_hyperllama.HyperLlamaForCausalLM"}
NAMES = {"est": "estonian", "fao": "faroese", "isl": "icelandic", "fas": "persian", "swe": "swedish",
         "multilingual": "multilingual"}


def small_1x(seed: int, shape: dict = TINY):
    return new_model(smollm2_config(**shape), seed=seed)


def small_2x(seed: int, shape: dict = TINY):
    return cloning.hyperclone(small_1x(seed, shape), 2)


def save_release(model, folder: Path, auto_map: bool = False, tokenizer=None) -> Path:
    """A repo as the authors' look: safetensors, config (the 572M ones: hyperllama, factor 2, maybe
    auto_map to remote code), plus files that must never be used (a pickle, remote code, a card)."""
    model.save_pretrained(folder, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    if config["model_type"] == "hyperllama":
        config["lm_head_normalization_factor"] = 2
        if auto_map:
            config["auto_map"] = AUTO_MAP
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_hyperllama.py").write_text("raise SystemExit('remote code ran')\n")
    (folder / "pytorch_model.bin").write_bytes(b"never unpickled")
    (folder / "README.md").write_text("model card\n")
    return folder


def not_found(repo_id: str) -> RepositoryNotFoundError:
    url = f"https://huggingface.co/api/models/{repo_id}"
    return RepositoryNotFoundError(f"404 Client Error. Repository Not Found for url: {url}",
                                   response=httpx2.Response(404, request=httpx2.Request("GET", url)))


class FakeHub:
    """snapshot_download over local folders; like a cache that also holds files of earlier downloads,
    it returns every file, so that only `released.place` decides what is used. Unknown ids: 404."""

    def __init__(self, root: Path, repos: dict[str, Path]):
        self.root, self.repos, self.calls = root, repos, []

    def __call__(self, repo_id, revision=None, allow_patterns=None, **kwargs):
        self.calls.append({"repo_id": repo_id, "revision": revision, "allow_patterns": allow_patterns})
        if repo_id not in self.repos:
            raise not_found(repo_id)
        snapshot = self.root / repo_id.replace("/", "--") / "snapshots" / COMMIT
        shutil.copytree(self.repos[repo_id], snapshot, dirs_exist_ok=True)
        return str(snapshot)

    @property
    def asked(self) -> list[str]:
        return [c["repo_id"] for c in self.calls]


def published(langs: list[str], matching: tuple[str, ...] = ("est",)) -> dict[str, str]:
    """The published id of every released kind a run of `langs` fetches -> 1x | 2x (the stand-in's format).
    `matching`: the languages whose -matching-1x checkpoints the stand-in Hub holds (1x-cloned and 2x)."""
    ids = {"liu-nlp/hyperllama-180m-english-1x": "1x", "liu-nlp/hyperllama-572m-english-1x-cloned": "2x"}
    for lang in [*langs, "multilingual"]:
        name = NAMES[lang]
        ids[f"liu-nlp/hyperllama-180m-{name}-1x"] = "1x"
        ids[f"liu-nlp/hyperllama-572m-{name}-1x-cloned"] = "2x"
        ids[f"liu-nlp/hyperllama-572m-{name}-2x"] = "2x"
        if lang in matching:
            ids[f"liu-nlp/hyperllama-572m-{name}-1x-cloned-matching-1x"] = "2x"
            ids[f"liu-nlp/hyperllama-572m-{name}-2x-matching-1x"] = "2x"
    return ids


def stand_ins(root: Path, ids: dict[str, str], shape: dict = TINY, tokenizer=None) -> dict[str, Path]:
    """A small model folder in the released format for each id (1x: llama; 2x: hyperllama, factor 2,
    auto_map to remote code that must not run)."""
    out = {}
    for i, (repo, kind) in enumerate(sorted(ids.items())):
        model = small_1x(100 + i, shape) if kind == "1x" else small_2x(100 + i, shape)
        out[repo] = save_release(model, root / repo.replace("/", "--"), auto_map=kind == "2x", tokenizer=tokenizer)
    return out


def write_cache(cache: Path, repo_id: str, folder: Path, repo_type: str = "model") -> Path:
    """Lay a folder out as the Hub cache's snapshot of repo_id at COMMIT (branch main)."""
    entry = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    (entry / "refs").mkdir(parents=True, exist_ok=True)
    (entry / "refs" / "main").write_text(COMMIT)
    snapshot = entry / "snapshots" / COMMIT
    shutil.copytree(folder, snapshot, dirs_exist_ok=True)
    return snapshot
