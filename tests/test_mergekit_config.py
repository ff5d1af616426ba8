"""`hyperllama merge --config FILE.yml`: the authors' mergekit configurations run as they are.

Stand-ins for the authors' 572M models (model_type hyperllama, tied head with factor 2, fp32 safetensors)
are a tiny HyperCloned base and per-language copies with random task vectors. mergekit 0.1.5 runs in this
process on the same files with the model names replaced by the stand-ins' folders (the only edit); it
loads the hyperllama folders because importing hyperllama_lib registers the model type with transformers,
where the authors' own runs used their remote code, and it infers the architecture from the tensor names
(no JSON architecture for HyperLlamaForCausalLM), keeping config.json as it is.

Agreement: with the same arithmetic precision (the file with dtype float32) our tensors equal mergekit's,
DARE-TIES included, because its random masks are drawn as mergekit draws them (one generator seeded with
--random-seed, tensors in sorted name order, models in file order). With the authors' dtype float16,
mergekit rounds to float16 after every step while we round the float32 result once; the test measures that
difference and checks that ours is exactly mergekit's float32 result rounded.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import run_cli
from huggingface_hub.errors import LocalEntryNotFoundError
from test_merging import load_tensors, make_tokenizer
from test_released import save_release, small_2x

import hyperllama_lib  # noqa: F401  (registers hyperllama, for mergekit and AutoModel)
from hyperllama_lib.merging import mergekit_config as mc

try:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions
except ImportError:  # pragma: no cover - depends on the environment
    MergeConfiguration = None
needs_mergekit = pytest.mark.skipif(MergeConfiguration is None, reason="mergekit 0.1.5 is not installed "
                                    "(pip install -e '.[test]')")

BASE = "liu-nlp/HyperLlama-572M-english-1x-cloned"
EST = "liu-nlp/HyperLlama-572M-estonian-1x-cloned"
FAO = "liu-nlp/HyperLlama-572M-faroese-1x-cloned"
NAMES = (BASE, EST, FAO)
# FACTS.md's example, verbatim: the authors' mergekit_configs/dare_ties_1x_cloned_ekk_fao.yaml
AUTHORS_DARE_TIES = """\
base_model: liu-nlp/HyperLlama-572M-english-1x-cloned
dtype: float16
merge_method: dare_ties
models:
- model: liu-nlp/HyperLlama-572M-estonian-1x-cloned
  parameters: {density: 0.5, weight: 1.0}
- model: liu-nlp/HyperLlama-572M-faroese-1x-cloned
  parameters: {density: 0.5, weight: 1.0}
parameters: {int8_mask: true, normalize: true}
"""
# the authors' linear and multislerp files have no base_model, weights only, and the same top-level parameters
AUTHORS_WEIGHTS_ONLY = """\
dtype: float16
merge_method: {method}
models:
- model: liu-nlp/HyperLlama-572M-estonian-1x-cloned
  parameters:
    weight: 1.0
- model: liu-nlp/HyperLlama-572M-faroese-1x-cloned
  parameters:
    weight: 1.0
parameters:
  int8_mask: true
  normalize: true
"""
SEED = 7


@pytest.fixture(scope="module")
def standins(tmp_path_factory) -> dict[str, Path]:
    """The three models of the example file: a base and two with random task vectors (plus a third)."""
    root = tmp_path_factory.mktemp("standins")
    tokenizer = make_tokenizer(["tere", "hey", "hello"])
    folders = {}
    for name, seed in ((BASE, 0), (EST, 1), (FAO, 2), ("isl", 3)):
        model = small_2x(0)
        if seed:
            g = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn(p.shape, generator=g) * 0.02)
        folder = save_release(model, root / name.rsplit("/", 1)[-1])
        tokenizer.save_pretrained(folder)
        folders[name] = folder
    return folders


def maps(standins) -> list[str]:
    # the base under the published lower-case spelling: --map matches the authors' mixed case to it
    return ["--map", f"{mc.published_id(BASE)}={standins[BASE]}", "--map", f"{EST}={standins[EST]}",
            "--map", f"{FAO}={standins[FAO]}"]


def write(tmp_path: Path, text: str, name: str = "config.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def ours(tmp_path: Path, text: str, standins, *extra: str, name: str = "ours") -> dict[str, torch.Tensor]:
    res = run_cli("merge", "--config", write(tmp_path, text, f"{name}.yml"), "--out", tmp_path / name,
                  *maps(standins), *extra)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.strip().splitlines()) == 1
    return load_tensors(tmp_path / name)


def mergekit(tmp_path: Path, text: str, standins, name: str = "theirs") -> dict[str, torch.Tensor]:
    """mergekit 0.1.5 on the same text, the model names replaced by the stand-ins' folders."""
    for model in NAMES:
        text = text.replace(model, str(standins[model]))
    run_merge(MergeConfiguration.model_validate(yaml.safe_load(text)), str(tmp_path / name),
              MergeOptions(device="cpu", out_shard_size=1 << 40, quiet=True, write_model_card=False,
                           random_seed=SEED))
    return load_tensors(tmp_path / name)


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert set(a) == set(b)
    return max((a[n].float() - b[n].float()).abs().max().item() for n in a)


VARIANTS = {  # the example file as it is, with another of the paper's methods, in float32 arithmetic
    "dare_ties": AUTHORS_DARE_TIES,
    "ties": AUTHORS_DARE_TIES.replace("dare_ties", "ties"),
    "task_arithmetic": AUTHORS_DARE_TIES.replace("dare_ties", "task_arithmetic"),
    "linear": AUTHORS_WEIGHTS_ONLY.format(method="linear"),
    "multislerp": AUTHORS_WEIGHTS_ONLY.format(method="multislerp"),
    # mergekit merges a linear configuration's base_model as one more input, weighted by the top-level weight
    "linear with a base_model": f"base_model: {BASE}\n" + AUTHORS_WEIGHTS_ONLY.format(method="linear").replace(
        "int8_mask: true", "weight: 0.5").replace("weight: 1.0\n- model", "weight: 3.0\n- model"),
}


@needs_mergekit
@pytest.mark.parametrize("method", list(VARIANTS))
def test_same_tensors_as_mergekit_in_float32(tmp_path, standins, method):
    text = VARIANTS[method].replace("dtype: float16", "dtype: float32")
    got = ours(tmp_path, text, standins, *(["--seed", str(SEED)] if method == "dare_ties" else []))
    want = mergekit(tmp_path, text, standins)
    assert all(t.dtype == torch.float32 for t in got.values())
    assert max_difference(got, want) <= 1e-6, method
    base = load_tensors(standins[BASE])
    assert max_difference(got, base) > 1e-3  # the merge did something


@needs_mergekit
def test_the_authors_file_as_it_is(tmp_path, standins):
    """dtype float16: ours is mergekit's float32 result rounded once; mergekit's own float16 run rounds
    every step, so it differs from ours by float16 rounding (and by which entries DARE's rescale and the
    sign election see at the float16 boundary)."""
    got = ours(tmp_path, AUTHORS_DARE_TIES, standins, "--seed", str(SEED))
    exact = mergekit(tmp_path, AUTHORS_DARE_TIES.replace("dtype: float16", "dtype: float32\nout_dtype: float16"),
                     standins, "exact")
    rounded_each_step = mergekit(tmp_path, AUTHORS_DARE_TIES, standins, "fp16")
    assert all(t.dtype == torch.float16 for t in (*got.values(), *rounded_each_step.values()))
    assert all(torch.equal(got[n], exact[n]) for n in got)
    # measured: 59% of the entries identical, the mean difference 0.13% of the mean merged task vector,
    # 0.04% of the entries more than 2e-3 apart (where the float16 sum of two task vectors flips the sign election)
    diff = torch.cat([(got[n].float() - rounded_each_step[n].float()).abs().flatten() for n in got])
    base = load_tensors(standins[BASE])
    task_vector = torch.cat([(got[n].float() - base[n]).abs().flatten() for n in got])
    assert (diff == 0).float().mean() > 0.5
    assert diff.mean() < 0.01 * task_vector.mean() and (diff > 2e-3).float().mean() < 0.002
    # the output is the authors' kind of model: hyperllama with the tied head divided by 2
    config = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert (config["model_type"], config["lm_head_normalization_factor"], config["tie_word_embeddings"]) == \
        ("hyperllama", 2, True)
    assert json.loads((tmp_path / "fp16" / "config.json").read_text())["lm_head_normalization_factor"] == 2
    manifest = json.loads((tmp_path / "ours" / "merge.json").read_text())
    assert manifest["random_stream"] == "mergekit" and manifest["parameters"]["seed"] == SEED
    assert manifest["source"]["accepted_without_effect"] == ["int8_mask"]
    assert manifest["source"]["models"][BASE] == {"map": str(standins[BASE])}


OVERRIDES = """\
base_model: {base}
dtype: float32
merge_method: {method}
models:
- model: {est}
  parameters: {{density: 0.7}}
- model: {fao}
  parameters: {{weight: 2.0}}
- model: {isl}
parameters: {{density: 0.3, weight: 0.5, normalize: {normalize}}}
"""


@needs_mergekit
@pytest.mark.parametrize("method", ["ties", "dare_ties", "dare_linear"])
def test_per_model_parameters_override_the_top_level_ones(tmp_path, standins, method):
    text = OVERRIDES.format(base=BASE, est=EST, fao=FAO, isl=standins["isl"], method=method,
                            normalize="false" if method == "dare_linear" else "true")
    got = ours(tmp_path, text, standins, *(["--seed", str(SEED)] if method.startswith("dare") else []))
    want = mergekit(tmp_path, text, standins)
    assert max_difference(got, want) <= 1e-6
    manifest = json.loads((tmp_path / "ours" / "merge.json").read_text())
    assert manifest["weights"] == [0.5, 2.0, 0.5] and manifest["parameters"]["density"] == [0.7, 0.3, 0.3]


@needs_mergekit
def test_left_out_parameters_take_mergekits_defaults(tmp_path, standins):
    """mergekit's dare_ties keeps every entry (density 1) and does not normalize unless told; ours would."""
    text = f"base_model: {BASE}\nmerge_method: dare_ties\nmodels:\n- model: {EST}\n- model: {FAO}\n" \
           "parameters: {weight: 1.0}\n"
    got, want = ours(tmp_path, text, standins), mergekit(tmp_path, text, standins)
    assert max_difference(got, want) <= 1e-6
    manifest = json.loads((tmp_path / "ours" / "merge.json").read_text())
    assert manifest["parameters"] == {"density": 1.0, "normalize": False, "rescale": True, "seed": 0}
    assert manifest["dtype"] == "float32"  # no dtype: the models' own, as mergekit


def test_hub_ids_are_fetched_in_the_published_spelling(tmp_path, standins, monkeypatch):
    asked = []

    def snapshot_download(repo_id, revision=None, allow_patterns=None, **kwargs):
        asked.append((repo_id, revision))
        published = {mc.published_id(name): folder for name, folder in standins.items()}
        if repo_id not in published:
            raise LocalEntryNotFoundError(f"{repo_id} is not in the local cache")
        return str(published[repo_id])

    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    monkeypatch.chdir(tmp_path)
    res = run_cli("merge", "--config", write(tmp_path, AUTHORS_DARE_TIES.replace(FAO, FAO + "@v2")),
                  "--out", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    assert asked == [("liu-nlp/hyperllama-572m-english-1x-cloned", None),
                     ("liu-nlp/hyperllama-572m-estonian-1x-cloned", None),
                     ("liu-nlp/hyperllama-572m-faroese-1x-cloned", "v2")]
    assert "merged 2 models with dare_ties (density=0.5, normalize=True, rescale=True, seed=0" in res.stdout
    assert "accepted without effect, as in mergekit: int8_mask" in res.stdout
    source = json.loads((tmp_path / "out" / "merge.json").read_text())["source"]
    assert source["models"][FAO + "@v2"]["repo_id"] == "liu-nlp/hyperllama-572m-faroese-1x-cloned"
    assert source["models"][FAO + "@v2"]["revision"] == "v2"

    res = run_cli("merge", "--config", write(tmp_path, AUTHORS_DARE_TIES.replace(EST, "liu-nlp/nowhere")),
                  "--out", tmp_path / "never")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "ReleasedModelError" in res.stderr and "liu-nlp/nowhere" in res.stderr and "config.yml" in res.stderr
    assert not (tmp_path / "never").exists()


def test_folders_are_found_relative_to_the_config_file(tmp_path, standins, monkeypatch):
    text = AUTHORS_DARE_TIES
    for name in NAMES:
        shutil.copytree(standins[name], tmp_path / "models" / standins[name].name)
        text = text.replace(name, f"../models/{standins[name].name}")
    for folder in ("configs", "elsewhere"):
        (tmp_path / folder).mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    res = run_cli("merge", "--config", write(tmp_path / "configs", text), "--out", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    source = json.loads((tmp_path / "out" / "merge.json").read_text())["source"]
    assert source["models"][f"../models/{standins[EST].name}"] == {"folder": str(tmp_path / "models" /
                                                                                 standins[EST].name)}


BAD = [
    ("slices: []\n", "mergekit key 'slices' is not supported"),
    ("tokenizer_source: union\n", "mergekit key 'tokenizer_source' is not supported"),
    ("merge_methd: ties\n", "unknown mergekit key 'merge_methd'"),
    ("REPLACE merge_method: dare_ties=merge_method: sce", "merge_method 'sce' is not supported"),
    ("REPLACE {density: 0.5, weight: 1.0}={density: 0.5, weight: 1.0, normalize: true}",
     "models[0].parameters.normalize: merge_method dare_ties takes weight, density here"),
    ("REPLACE int8_mask: true=int8_mask: true, gamma: 0.01", "parameters.gamma"),
    ("REPLACE {density: 0.5, weight: 1.0}={density: [0.1, 0.9], weight: 1.0}",
     "models[0].parameters.density is a list (a gradient or filtered values)"),
    ("REPLACE int8_mask: true=int8_mask: true, lambda: 0.5", "parameters.lambda: only lambda 1.0 is supported"),
    ("REPLACE , weight: 1.0}=}", "models[0] has no weight (mergekit requires one"),
    (f"FILE base_model: {BASE}\n" + AUTHORS_WEIGHTS_ONLY.format(method="linear"),
     "base_model of a linear merge: mergekit merges it as one more input and needs its weight"),
    ("REPLACE base_model: liu-nlp/HyperLlama-572M-english-1x-cloned\n=", "merge_method dare_ties needs a base_model"),
    ("REPLACE faroese=estonian", "models[1]: 'liu-nlp/HyperLlama-572M-estonian-1x-cloned' is listed twice"),
    ("REPLACE dtype: float16=dtype: float64", "dtype 'float64' is not supported"),
    ("REPLACE liu-nlp/HyperLlama-572M-faroese-1x-cloned=./stand-ins/faroese",
     "model './stand-ins/faroese': no such folder"),
    ("REPLACE liu-nlp/HyperLlama-572M-faroese-1x-cloned=liu-nlp/HyperLlama-572M-faroese-1x-cloned+lora",
     "LoRA models"),
]


@pytest.mark.parametrize("change, message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_what_we_cannot_honour_stops_in_one_line(tmp_path, standins, change, message):
    if change.startswith("FILE "):
        text = change[len("FILE "):]
    elif change.startswith("REPLACE "):
        old, new = change[len("REPLACE "):].split("=", 1)
        assert old in AUTHORS_DARE_TIES
        text = AUTHORS_DARE_TIES.replace(old, new, 1)
    else:
        text = AUTHORS_DARE_TIES + change
    config = write(tmp_path, text)
    res = run_cli("merge", "--config", config, "--out", tmp_path / "never", *maps(standins))
    assert res.returncode == 2, res.stdout
    assert len(res.stderr.strip().splitlines()) == 1
    assert res.stderr.startswith(f"hyperllama merge: MergeError: {config}: "), res.stderr
    assert message in res.stderr, res.stderr
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("extra, message", [
    (["--method", "ties"], "drop --method"),
    (["MODEL_DIR"], "drop MODEL_DIR"),
    (["--dtype", "float16"], "drop --dtype"),
    (["--map", "nonsense"], "--map expects NAME=DIR"),
])
def test_config_and_model_options_do_not_mix(tmp_path, standins, extra, message):
    extra = [str(standins[EST]) if e == "MODEL_DIR" else e for e in extra]
    res = run_cli("merge", "--config", write(tmp_path, AUTHORS_DARE_TIES), "--out", tmp_path / "never",
                  *maps(standins), *extra)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert message in res.stderr, res.stderr
    assert not (tmp_path / "never").exists()


def test_engine_takes_density_per_model_and_mergekits_random_stream(standins, tmp_path):
    from hyperllama_lib import merging

    a, b, base = torch.tensor([1.0, -2.0, 3.0, 0.5]), torch.tensor([0.2, 0.1, -0.3, 4.0]), torch.zeros(4)
    # density 1 keeps a whole, density 0 drops b: the merge is a (normalised by a's weight alone)
    torch.testing.assert_close(merging.merge_tensors("ties", [a, b], base, density=[1.0, 0.0]), a)
    with pytest.raises(merging.MergeError, match="density of ties: got 3 values for 2 models"):
        merging.merge_tensors("ties", [a, b], base, density=[1.0, 0.0, 0.5])
    with pytest.raises(merging.MergeError, match=r"density must be in \[0, 1\].*got 1.5"):
        merging.merge_tensors("dare_ties", [a, b], base, density=[0.5, 1.5])
    models = [standins[EST], standins[FAO]]
    runs = {stream: merging.merge_models("dare_ties", models, tmp_path / stream, base_dir=standins[BASE],
                                         random_stream=stream, seed=3) for stream in ("per_tensor", "mergekit")}
    assert "random_stream" not in json.loads((runs["per_tensor"] / "merge.json").read_text())
    assert "--random-seed 3" in (runs["mergekit"] / "mergekit_config.yml").read_text()
    assert max_difference(load_tensors(runs["per_tensor"]), load_tensors(runs["mergekit"])) > 1e-3
    with pytest.raises(merging.MergeError, match="unknown random_stream 'global'"):
        merging.merge_models("dare_ties", models, tmp_path / "never", base_dir=standins[BASE], random_stream="global")


def test_published_id():
    assert mc.published_id("liu-nlp/HyperLlama-572M-estonian-1x-cloned") == "liu-nlp/hyperllama-572m-estonian-1x-cloned"
    assert mc.published_id("liu-nlp/HyperLlama-180M-english-1x@Main") == "liu-nlp/hyperllama-180m-english-1x@Main"
    assert mc.published_id("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"


@needs_mergekit
def test_our_table_is_mergekits_spec():
    from mergekit.merge_methods import registry

    for name, spec in mc.MERGEKIT_METHODS.items():
        theirs = registry.get(name).spec
        params = {p.name: (p.scope.value, mc.REQUIRED if p.required else p.default) for p in theirs.parameters}
        ours = {**{k: ("shared", v) for k, v in spec.shared.items()},
                **{k: ("input" if spec.base_is_input else "non_base", v) for k, v in spec.per_model.items()}}
        assert ours == params, name
        assert set(spec.ignored).isdisjoint(params), name
