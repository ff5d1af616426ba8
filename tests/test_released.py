"""Starting from the authors' released models (models_from: hub), offline: small checkpoints made here in
the released formats stand in for the Hub, and snapshot_download is replaced by a copy."""
from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import pytest
import torch
from released_hub import COMMIT, TINY, FakeHub, published, save_release, small_1x, small_2x, stand_ins
from transformers import AutoModelForCausalLM

import hyperllama_lib  # noqa: F401  (registers hyperllama)
from hyperllama_lib import artifacts
from hyperllama_lib.models import released
from hyperllama_lib.models.modeling import count_parameters, smollm2_config
from hyperllama_lib.params import ParamError, load_params
from hyperllama_lib.pipeline import cpt, evaluate, layout, merge, upscale


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
              "setups": ["1x", "1x_cloned", "2x"], "merge_methods": ["linear"], **overrides}
    return load_params("smoke", values, need_data=False)


def fake_data_step(p, vocab_size: int = 97) -> None:
    """01_data's record as far as fetching reads it: the plan (vocabulary, CPT steps)."""
    plan = layout.of(p).data.plan
    artifacts.atomic.write_json(plan, {"vocab_size": vocab_size, "cpt_steps": {"est": 7, "fao": 3, "multilingual": 10}})
    with artifacts.Step(p.run_path, layout.DATA_STEP, {"fake": True}) as s:
        s.outputs = [plan]


def test_hub_mode_fetches_exactly_the_published_ids_and_fills_the_pipeline(tmp_path, hub):
    p = smoke(tmp_path, released_repos={"2x/faroese": "someone/fao-2x@v1"})
    fake_data_step(p)
    expected = published(["est", "fao"], matching=("est",))
    del expected["liu-nlp/hyperllama-572m-faroese-2x"]  # overridden: fetched as someone/fao-2x@v1
    hub.repos = stand_ins(tmp_path / "hub", {**expected, "someone/fao-2x": "2x"})

    english = upscale.run(p)
    assert list(english.model) == ["base_1x", "base_2x", "base_1x_cloned"]
    assert english.clone_max_logit_difference.dropna().max() < 1e-4
    manifest = artifacts.Manifest(p.run_path)
    for setup, repo in (("1x", "liu-nlp/hyperllama-180m-english-1x"), ("2x", "liu-nlp/hyperllama-572m-english-1x-cloned")):
        entry = manifest.entry(f"english/{layout.BASE_FOR_SETUP[setup]}")
        assert (entry["repo_id"], entry["revision"], entry["commit"]) == (repo, "main", COMMIT)
        with torch.no_grad():
            fetched = AutoModelForCausalLM.from_pretrained(str(layout.of(p).base_model(setup)))
            source = AutoModelForCausalLM.from_pretrained(str(hub.repos[repo]))
            assert torch.equal(fetched(ids()).logits, source(ids()).logits)
    assert manifest.entry("english/seed") is None

    runs = {lang: cpt.run(p, lang) for lang in ("est", "fao", "multilingual")}
    assert list(runs["est"].steps) == [7, 7, 7] and list(runs["fao"].tokens) == [3 * p.tokens_per_step] * 3
    entry = manifest.entry("cpt/2x/fao")
    assert (entry["repo_id"], entry["revision"]) == ("someone/fao-2x", "v1")
    assert entry["flops_total"] == 6 * entry["params_total"] * entry["tokens"]
    assert entry["params_total"] == count_parameters(small_2x(0))["total"]
    assert manifest.entry("cpt/1x/fao")["params_total"] == count_parameters(small_1x(0))["total"]
    absent = {"liu-nlp/hyperllama-572m-faroese-1x-cloned-matching-1x", "someone/fao-2x-matching-1x",
              "liu-nlp/hyperllama-572m-multilingual-1x-cloned-matching-1x",
              "liu-nlp/hyperllama-572m-multilingual-2x-matching-1x"}
    assert set(hub.asked) - set(expected) == {"someone/fao-2x", *absent}  # asked, absent, skipped
    assert set(expected) <= set(hub.asked) and len(hub.asked) == len(set(hub.asked))

    # the -matching-1x checkpoints: at the step whose FLOPs match the final 1x model's
    one_x, matching = manifest.entry("cpt/1x/est"), manifest.entry("cpt/1x_cloned/est/matching_1x")
    assert matching["steps"] == round(7 * one_x["params_total"] / matching["params_total"]) == 2
    assert abs(matching["flops_total"] / one_x["flops_total"] - 1) < 0.2
    assert manifest.entry("cpt/2x/fao/matching_1x")["absent"]

    calls = len(hub.calls)
    upscale.run(p)
    for lang in ("est", "fao", "multilingual"):
        cpt.run(p, lang)
    assert len(hub.calls) == calls  # recorded steps (absent ones too) are skipped, nothing is asked again

    merges = merge.run(p)
    assert len(merges) == 3 and all(Path(path).is_dir() for path in merges.path)
    assert list(merges.base) == ["base_1x", "base_1x_cloned", "base_2x"]
    listed = {(m.kind, m.setup, m.trained_on): m for m in evaluate.models(p)}
    assert {k for k, _, _ in listed} == {"base", "cpt", "multilingual", "matching", "merged"}
    assert len(listed) == 3 + 6 + 3 + 2 + 3
    assert listed[("cpt", "1x_cloned", "est")].tokens == 7 * p.tokens_per_step
    assert listed[("matching", "2x", "est")].step == 2 and listed[("matching", "2x", "est")].final


def test_merge_base_authors_takes_the_trained_572m_base(tmp_path, hub):
    p = smoke(tmp_path, merge_base="authors", released_matching=False, setups=["1x_cloned", "2x"])
    fake_data_step(p)
    hub.repos = stand_ins(tmp_path / "hub", published(["est", "fao"], matching=()))
    upscale.run(p)
    for lang in p.langs:
        cpt.run(p, lang)
    merges = merge.run(p)
    assert list(merges.base) == ["base_2x", "base_2x"]  # both against liu-nlp/hyperllama-572m-english-1x-cloned
    merged = artifacts.Manifest(p.run_path).entry("merge/1x_cloned/linear")
    assert merged["params"]["merge_base"] == "authors"


def test_the_five_language_2x_ties_merges_of_the_authors_use_their_english_2x(tmp_path):
    from hyperllama_lib.pipeline import merge as merge_step

    five = ("est", "fao", "isl", "fas", "swe")
    p = smoke(tmp_path, merge_base="authors", langs=list(five), merge_methods=["linear", "ties", "dare_ties"])
    assert merge_step.base_step(p, "2x", "ties", five) == "english/authors_base_2x"
    assert merge_step.base_step(p, "2x", "dare_ties", five) == "english/authors_base_2x"
    assert merge_step.base_step(p, "2x", "ties", five[:4]) == "english/base_2x"
    assert merge_step.base_step(p, "2x", "linear", five) == "english/base_2x"
    assert merge_step.base_step(p, "1x_cloned", "ties", five) == "english/base_2x"
    assert merge_step.base_step(p, "1x", "ties", five) == "english/base_1x"
    assert "liu-nlp/hyperllama-572m-english-2x" in [r.repo for r in released.releases(p)]
    setup = smoke(tmp_path, langs=list(five))
    assert merge_step.base_step(setup, "1x_cloned", "ties", five) == "english/base_1x_cloned"
    assert "liu-nlp/hyperllama-572m-english-2x" not in [r.repo for r in released.releases(setup)]


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


def test_repo_names_are_the_published_ones(tmp_path):
    p = smoke(tmp_path, langs=["est", "fao", "isl", "fas", "swe"])
    facts = ["liu-nlp/hyperllama-180m-english-1x", "liu-nlp/hyperllama-180m-estonian-1x",
             "liu-nlp/hyperllama-180m-faroese-1x", "liu-nlp/hyperllama-180m-icelandic-1x",
             "liu-nlp/hyperllama-180m-multilingual-1x", "liu-nlp/hyperllama-180m-persian-1x",
             "liu-nlp/hyperllama-180m-swedish-1x", "liu-nlp/hyperllama-572m-english-1x-cloned",
             "liu-nlp/hyperllama-572m-estonian-1x-cloned", "liu-nlp/hyperllama-572m-estonian-1x-cloned-matching-1x",
             "liu-nlp/hyperllama-572m-icelandic-2x", "liu-nlp/hyperllama-572m-persian-2x"]
    repos = [r.repo for r in released.releases(p)]
    assert set(facts) <= set(repos) and set(repos) == set(published(list(p.langs), matching=(*p.langs, "multilingual")))
    assert len(repos) == 2 + 3 * 6 + 2 * 6 and all(r == r.lower() and "_" not in r for r in repos)
    optional = {r.repo for r in released.releases(p) if r.optional}
    assert optional == {r for r in repos if r.endswith("-matching-1x")}


def test_repo_names_overrides(tmp_path):
    p = smoke(tmp_path, released_repos={"2x/swedish": "me/sv@abc", "1x/eng": "me/en"})
    assert p.released_repos == {"2x/swe": "me/sv@abc", "1x/eng": "me/en"}
    assert released.repo_for(p, "2x", "swe") == ("me/sv", "abc")
    assert released.matching_repo_for(p, "2x", "swe") == ("me/sv-matching-1x", "abc")
    assert released.repo_for(p, "1x", "eng") == ("me/en", None)
    assert released.repo_for(p, "2x", "eng") == ("liu-nlp/hyperllama-572m-english-1x-cloned", None)
    assert released.repo_for(p, "1x_cloned", "multilingual") == ("liu-nlp/hyperllama-572m-multilingual-1x-cloned", None)
    assert released.repo_for(smoke(tmp_path, released_repo_pattern="x/{lang}-{size}"), "2x", "isl") == ("x/isl-572m", None)
    with pytest.raises(released.ReleasedModelError, match="cloned from the 1x base"):
        released.repo_for(p, "1x_cloned", "eng")


def test_released_lists_the_repos_and_their_sizes_before_any_download(tmp_path, hub, monkeypatch):
    from conftest import run_cli

    sizes = {"liu-nlp/hyperllama-180m-english-1x": 361_000_000}
    monkeypatch.setattr(released, "download_size", lambda repo, revision=None: sizes.get(repo))
    res = run_cli("released", "--langs", "est,fao", "--set", "setups=[1x]")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split()[:3] == ["liu-nlp/hyperllama-180m-english-1x", "0.36", "GB"]
    assert [line.split()[0] for line in lines[1:-1]] == [
        "liu-nlp/hyperllama-180m-estonian-1x", "liu-nlp/hyperllama-180m-faroese-1x",
        "liu-nlp/hyperllama-180m-multilingual-1x"]
    assert "4 repositories (0 optional); 0.36 GB in the 1 whose size the Hub gave; 3 unknown" in lines[-1]
    assert hub.calls == []  # nothing downloaded


@pytest.mark.parametrize("overrides, needle", [
    ({"models_from": "cloud"}, "unknown models_from 'cloud'; valid choices: train, hub"),
    ({"released_repos": {"3x/swe": "a/b"}}, "unknown released_repos setup '3x'; valid choices: 1x, 1x_cloned, 2x"),
    ({"released_repos": {"2x/klingon": "a/b"}}, "unknown language 'klingon'"),
    ({"released_repos": {"2x/swe": "no-owner"}}, "'no-owner' is not a model to fetch"),
    ({"released_repos": {"1x_cloned/eng": "a/b"}}, "the 1x_cloned base is cloned, not fetched"),
    ({"released_repo_pattern": "liu-nlp/{model}"}, "is not a valid pattern"),
    ({"merge_base": "english"}, "unknown merge_base 'english'; valid choices: setup, authors"),
    ({"eval_source": "web"}, "unknown eval_source 'web'; valid choices: local, hub"),
])
def test_released_params_are_validated_in_one_line(overrides, needle):
    with pytest.raises(ParamError) as err:
        load_params("smoke", overrides, need_data=False)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_merging_stops_before_it_starts_when_the_disk_cannot_hold_the_merges(tmp_path, hub, monkeypatch):
    import shutil

    from hyperllama_lib.errors import DiskSpaceError

    p = smoke(tmp_path, setups=["1x"], released_matching=False, merge_methods=["linear", "ties"])
    fake_data_step(p)
    hub.repos = stand_ins(tmp_path / "hub", published(["est", "fao"], matching=()))
    upscale.run(p)
    for lang in p.langs:
        cpt.run(p, lang)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DiskSpaceError, match=r"^04_merge would write 2 merged models, about 0\.0 GB in float32, but "
                                             r"only 0\.0 GB are free"):
        merge.run(p)
    assert not layout.of(p).merged_model("1x", "linear").exists()


def test_a_release_whose_tokenizer_differs_from_01_data_is_refused_in_one_line(tmp_path, hub):
    from hyperllama_lib.corpus import tokenizer as tok_lib

    ours = tmp_path / "ours"
    tok_lib.save_tokenizer(tok_lib.train_bpe(["the cat sat on the mat"] * 20, 300), ours)
    theirs = tok_lib.train_bpe(["en katt satt på mattan"] * 20, 300)
    hub.repos["liu-nlp/m"] = save_release(small_1x(0), tmp_path / "repo", tokenizer=theirs)
    with pytest.raises(released.ReleasedModelError) as err:
        released.fetch("liu-nlp/m", None, tmp_path / "placed", tokenizer_dir=ours)
    assert str(err.value).startswith("liu-nlp/m: its tokenizer does not match 01_data's (")
    assert "\n" not in str(err.value) and not (tmp_path / "placed").exists()
    hub.repos["liu-nlp/same"] = save_release(small_1x(0), tmp_path / "same", tokenizer=tok_lib.load_tokenizer(ours))
    assert released.fetch("liu-nlp/same", None, tmp_path / "placed", tokenizer_dir=ours)["repo_id"] == "liu-nlp/same"


def test_merge_store_recipe_builds_the_same_merge_only_while_it_is_scored(tmp_path, hub):
    from test_merging import load_tensors

    from hyperllama_lib.evaluation import benchmarks
    from hyperllama_lib.merging import recipe

    p = smoke(tmp_path, setups=["2x"], released_matching=False, merge_methods=["dare_ties"], merge_store="recipe")
    fake_data_step(p)
    hub.repos = stand_ins(tmp_path / "hub", published(["est", "fao"], matching=()))
    upscale.run(p)
    for lang in p.langs:
        cpt.run(p, lang)
    merge.run(p)
    folder = layout.of(p).merged_model("2x", "dare_ties")
    assert [f.name for f in folder.iterdir()] == ["recipe.json"] and recipe.is_recipe(folder)
    weights = merge.merging.merge_models(
        "dare_ties", [layout.of(p).cpt_model("2x", lang) for lang in p.langs], tmp_path / "weights",
        base_dir=layout.of(p).base_model("2x"), weights=[1.0, 1.0], density=0.5, normalize=True, seed=p.seed,
        fisher_floor=p.fisher_floor, dtype="float32")
    with recipe.built(folder) as built:
        ours, theirs = load_tensors(built), load_tensors(weights)
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert sorted(f.name for f in folder.parent.iterdir()) == ["dare_ties"]  # the built model is gone
    entry = next(e for e in evaluate.models(p) if e.kind == "merged")
    nothing = {b.name: {} for b in benchmarks.BENCHMARKS}
    assert evaluate.evaluate_model(p, entry, None, nothing).empty
    assert sorted(f.name for f in folder.parent.iterdir()) == ["dare_ties"]


def test_a_missing_repo_stops_in_one_line_and_writes_nothing(tmp_path, hub):
    p = smoke(tmp_path, setups=["1x"], released_matching=False)
    fake_data_step(p)
    ids = published(["est", "fao"], matching=())
    del ids["liu-nlp/hyperllama-180m-faroese-1x"]
    hub.repos = stand_ins(tmp_path / "hub", ids)
    upscale.run(p)
    cpt.run(p, "est")
    with pytest.raises(released.ReleasedModelError) as err:
        cpt.run(p, "fao")
    assert str(err.value).startswith("liu-nlp/hyperllama-180m-faroese-1x: cannot download (RepositoryNotFoundError: ")
    assert "\n" not in str(err.value) and not layout.of(p).cpt_model("1x", "fao").exists()
    assert artifacts.Manifest(p.run_path).entry("cpt/1x/fao") is None


def test_the_authors_english_2x_is_fetched_and_used_for_their_five_language_2x_ties(tmp_path, hub):
    five = ["est", "fao", "isl", "fas", "swe"]
    p = smoke(tmp_path, langs=five, setups=["2x"], merge_base="authors", merge_methods=["ties"],
              released_matching=False)
    plan = layout.of(p).data.plan
    artifacts.atomic.write_json(plan, {"vocab_size": 97, "cpt_steps": {**dict.fromkeys(five, 5), "multilingual": 9}})
    with artifacts.Step(p.run_path, layout.DATA_STEP, {"fake": True}) as s:
        s.outputs = [plan]
    ids = {repo: kind for repo, kind in published(five, matching=()).items() if "-2x" in repo or "english" in repo}
    hub.repos = stand_ins(tmp_path / "hub", {**ids, "liu-nlp/hyperllama-572m-english-2x": "2x"})
    upscale.run(p)
    for lang in five:
        cpt.run(p, lang)
    assert list(merge.run(p).base) == ["authors_base_2x"]
    manifest = artifacts.Manifest(p.run_path)
    assert manifest.entry("english/authors_base_2x")["repo_id"] == "liu-nlp/hyperllama-572m-english-2x"
    assert manifest.entry("english/base_2x")["repo_id"] == "liu-nlp/hyperllama-572m-english-1x-cloned"
    assert "liu-nlp/hyperllama-180m-english-1x" not in hub.asked  # no setup needs the 1x base
