"""Starting from the authors' released models (models_from: hub), offline: small checkpoints made here in
the released formats stand in for the Hub, and snapshot_download is replaced by a copy."""
from __future__ import annotations

import fnmatch
import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

import hyperllama_lib  # noqa: F401  (registers hyperllama)
from hyperllama_lib import artifacts
from hyperllama_lib.models import cloning, released
from hyperllama_lib.models.modeling import HyperLlamaForCausalLM, count_parameters, new_model, smollm2_config
from hyperllama_lib.params import ParamError, load_params
from hyperllama_lib.pipeline import cpt, evaluate, layout, merge, upscale

TINY = dict(vocab_size=97, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, intermediate_size=48)
COMMIT = "0123456789abcdef0123456789abcdef01234567"
AUTO_MAP = {"AutoConfig": "configuration_hyperllama.HyperLlamaConfig",
            "AutoModelForCausalLM": "modeling_hyperllama.HyperLlamaForCausalLM"}


def small_1x(seed: int) -> LlamaForCausalLM:
    return new_model(smollm2_config(**TINY), seed=seed)


def small_2x(seed: int) -> HyperLlamaForCausalLM:
    return cloning.hyperclone(small_1x(seed), 2)


def save_release(model, folder: Path, auto_map: bool = False) -> Path:
    """A repo as the authors' look: safetensors, config (the 572M ones: hyperllama, factor 2, maybe
    auto_map to remote code), plus files that must never be used (a pickle, remote code, a card)."""
    model.save_pretrained(folder, safe_serialization=True)
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


class FakeHub:
    """snapshot_download over local folders; like a cache that also holds files of earlier downloads,
    it returns every file, so that only `released.place` decides what is used."""

    def __init__(self, root: Path, repos: dict[str, Path]):
        self.root, self.repos, self.calls = root, repos, []

    def __call__(self, repo_id, revision=None, allow_patterns=None, **kwargs):
        self.calls.append({"repo_id": repo_id, "revision": revision, "allow_patterns": allow_patterns})
        snapshot = self.root / repo_id.replace("/", "--") / "snapshots" / COMMIT
        shutil.copytree(self.repos[repo_id], snapshot, dirs_exist_ok=True)
        return str(snapshot)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    fake = FakeHub(tmp_path / "hub-cache", {})
    monkeypatch.setattr("huggingface_hub.snapshot_download", fake)
    return fake


def ids() -> torch.Tensor:
    return torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kind, auto_map", [("1x", False), ("2x", False), ("2x", True)])
def test_released_formats_load_without_remote_code_and_keep_the_logits(tmp_path, hub, kind, auto_map):
    model = small_1x(1) if kind == "1x" else small_2x(1)
    hub.repos["liu-nlp/m"] = save_release(model, tmp_path / "repo", auto_map)
    info = released.fetch("liu-nlp/m", None, tmp_path / "placed")
    assert info == {"repo_id": "liu-nlp/m", "revision": "main", "commit": COMMIT,
                    "model_type": "llama" if kind == "1x" else "hyperllama"}
    patterns = hub.calls[0]["allow_patterns"]
    for never in ("pytorch_model.bin", "modeling_hyperllama.py", "README.md"):
        assert not any(fnmatch.fnmatchcase(never, pat) for pat in patterns), never
        assert not (tmp_path / "placed" / never).exists()
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "placed"))
    assert type(loaded) is type(model)
    if kind == "2x":
        assert loaded.config.lm_head_normalization_factor == 2
        assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    with torch.no_grad():
        assert torch.equal(loaded(ids()).logits, model(ids()).logits)


def smoke(tmp_path, **overrides):
    values = {"run_dir": str(tmp_path / "run"), "models_from": "hub", "langs": ["est", "fao"],
              "merge_methods": ["linear"], **overrides}
    return load_params("smoke", values, need_data=False)


def fake_data_step(p, vocab_size: int = 97) -> None:
    """01_data's record as far as fetching reads it: the plan (vocabulary, CPT steps)."""
    plan = layout.of(p).data.plan
    artifacts.atomic.write_json(plan, {"vocab_size": vocab_size, "cpt_steps": {"est": 7, "fao": 3}})
    with artifacts.Step(p.run_path, layout.DATA_STEP, {"fake": True}) as s:
        s.outputs = [plan]


def test_hub_mode_fills_the_pipeline_paths_and_manifest(tmp_path, hub):
    p = smoke(tmp_path, released_repos={"2x/faroese": "someone/fao-2x@v1"})
    fake_data_step(p)
    sources = {"1x": small_1x(0), "2x": small_2x(0)}
    hub.repos = {released.ENGLISH_REPOS[s]: save_release(m, tmp_path / f"base{s}", auto_map=True)
                 for s, m in sources.items()}
    for i, (setup, lang) in enumerate([(s, lang) for s in ("1x", "1x_cloned", "2x") for lang in ("est", "fao")]):
        model = small_1x(10 + i) if setup == "1x" else small_2x(10 + i)
        repo = released.repo_for(p, setup, lang)[0]
        hub.repos[repo] = save_release(model, tmp_path / f"{setup}-{lang}")
    assert "liu-nlp/HyperLlama-572M-estonian-1x_cloned" in hub.repos and "someone/fao-2x" in hub.repos

    english = upscale.run(p)
    assert list(english.model) == ["base_1x", "base_2x", "base_1x_cloned"]
    assert english.clone_max_logit_difference.dropna().max() < 1e-4
    manifest = artifacts.Manifest(p.run_path)
    for setup, source in sources.items():
        entry = manifest.entry(f"english/{layout.BASE_FOR_SETUP[setup]}")
        assert (entry["repo_id"], entry["revision"], entry["commit"]) == (released.ENGLISH_REPOS[setup], "main", COMMIT)
        with torch.no_grad():
            assert torch.equal(AutoModelForCausalLM.from_pretrained(str(layout.of(p).base_model(setup)))(ids()).logits,
                               source(ids()).logits)
    assert manifest.entry("english/seed") is None

    runs = {lang: cpt.run(p, lang) for lang in ("est", "fao")}
    assert list(runs["est"].steps) == [7, 7, 7] and list(runs["fao"].tokens) == [3 * p.tokens_per_step] * 3
    entry = manifest.entry("cpt/2x/fao")
    assert (entry["repo_id"], entry["revision"]) == ("someone/fao-2x", "v1")
    assert entry["flops_total"] == 6 * entry["params_total"] * entry["tokens"]
    assert entry["params_total"] == count_parameters(sources["2x"])["total"]
    assert manifest.entry("cpt/1x/fao")["params_total"] == count_parameters(sources["1x"])["total"]
    assert hub.calls[-1] == {"repo_id": "someone/fao-2x", "revision": "v1", "allow_patterns": released.ALLOW_PATTERNS}

    calls = len(hub.calls)
    upscale.run(p)
    for lang in ("est", "fao"):
        cpt.run(p, lang)
    assert len(hub.calls) == calls  # recorded steps are skipped, nothing is fetched again

    merges = merge.run(p)
    assert len(merges) == 3 and all(Path(path).is_dir() for path in merges.path)
    listed = {(m.kind, m.setup, m.trained_on): m for m in evaluate.models(p)}
    assert {k for k, _, _ in listed} == {"base", "cpt", "merged"} and len(listed) == 3 + 6 + 3
    assert listed[("cpt", "1x_cloned", "est")].tokens == 7 * p.tokens_per_step


def test_a_release_with_only_pickled_weights_is_refused_in_one_line(tmp_path, hub):
    p = smoke(tmp_path, released_repos={"1x/eng": "someone/bin-only"})
    fake_data_step(p)
    folder = tmp_path / "bin-only"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(smollm2_config(**TINY).to_dict()))
    (folder / "pytorch_model.bin").write_bytes(b"never unpickled")
    hub.repos["someone/bin-only"] = folder
    with pytest.raises(released.ReleasedModelError) as err:
        upscale.run(p)
    message = str(err.value)
    assert "\n" not in message and message.startswith("someone/bin-only: ") and "no *.safetensors" in message
    assert not layout.of(p).base_model("1x").exists()
    assert artifacts.Manifest(p.run_path).entry("english/base_1x") is None


def test_a_release_with_another_vocabulary_names_the_tokenizer(tmp_path, hub):
    hub.repos["liu-nlp/m"] = save_release(small_1x(0), tmp_path / "repo")
    with pytest.raises(released.ReleasedModelError, match="97 ids, but 01_data's tokenizer has 128256.*llama3"):
        released.fetch("liu-nlp/m", None, tmp_path / "placed", vocab_size=128256)
    assert not (tmp_path / "placed").exists()


def test_repo_names_default_pattern_and_overrides(tmp_path):
    p = smoke(tmp_path, released_repos={"2x/swedish": "me/sv@abc", "1x/eng": "me/en"})
    assert p.released_repos == {"2x/swe": "me/sv@abc", "1x/eng": "me/en"}
    assert released.repo_for(p, "2x", "swe") == ("me/sv", "abc")
    assert released.repo_for(p, "1x", "eng") == ("me/en", None)
    assert released.repo_for(p, "2x", "eng") == ("liu-nlp/HyperLlama-572M-english-2x", None)
    assert released.repo_for(p, "1x", "fas") == ("liu-nlp/HyperLlama-180M-persian-1x", None)
    assert released.repo_for(p, "1x_cloned", "multilingual") == ("liu-nlp/HyperLlama-572M-multilingual-1x_cloned", None)
    assert released.repo_for(smoke(tmp_path, released_repo_pattern="x/{lang}-{size}"), "2x", "isl") == ("x/isl-572M", None)
    with pytest.raises(released.ReleasedModelError, match="cloned from the 1x base"):
        released.repo_for(p, "1x_cloned", "eng")


@pytest.mark.parametrize("overrides, needle", [
    ({"models_from": "cloud"}, "unknown models_from 'cloud'; valid choices: train, hub"),
    ({"released_repos": {"3x/swe": "a/b"}}, "unknown released_repos setup '3x'; valid choices: 1x, 1x_cloned, 2x"),
    ({"released_repos": {"2x/klingon": "a/b"}}, "unknown language 'klingon'"),
    ({"released_repos": {"2x/swe": "no-owner"}}, "'no-owner' is not a model to fetch"),
    ({"released_repos": {"1x_cloned/eng": "a/b"}}, "the 1x_cloned base is cloned, not fetched"),
    ({"released_repo_pattern": "liu-nlp/{model}"}, "is not a valid pattern"),
])
def test_released_params_are_validated_in_one_line(overrides, needle):
    with pytest.raises(ParamError) as err:
        load_params("smoke", overrides, need_data=False)
    assert needle in str(err.value) and "\n" not in str(err.value)
