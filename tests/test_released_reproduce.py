"""`hyperllama reproduce --scale released` end to end, all six notebooks, against a stand-in Hub.

The stand-in is the Hub's own local cache, filled with small models of every released kind (180M format:
llama; 572M format: hyperllama with head factor 2 and an auto_map to remote code that must not run) and the
evaluation sets, read by huggingface_hub itself with HF_HUB_OFFLINE=1 in every notebook kernel. The cache
keys on the exact spelling of an id, so a run that asked for any other spelling would stop.
"""
from __future__ import annotations

import json

from conftest import run_cli
from released_hub import NARROW, published, stand_ins, write_cache

from hyperllama_lib import artifacts
from hyperllama_lib.corpus import tokenizer as tok_lib

LANGS = ["est", "fao"]
MULTIBLIMP = "sen\twrong_sen\tphenomenon\tlang\n" + "".join(
    f"The {n} sleeps .\tThe {n} sleep .\tSV-#\t{{lang}}\n" for n in ("dog", "cat", "bird"))


def fill_cache(cache, tmp_path) -> dict[str, str]:
    ids = published(LANGS, matching=("est",))
    for repo, folder in stand_ins(tmp_path / "models", ids, NARROW, tok_lib.llama3_tokenizer()).items():
        write_cache(cache, repo, folder)
    multiblimp = tmp_path / "multiblimp"
    for lang in ("eng", *LANGS):
        (multiblimp / lang).mkdir(parents=True)
        (multiblimp / lang / "data.tsv").write_text(MULTIBLIMP.format(lang=lang))
    write_cache(cache, "jumelet/multiblimp", multiblimp, repo_type="dataset")
    return ids


def test_reproduce_released_runs_every_notebook_on_the_published_ids(tmp_path, monkeypatch, data_dir):
    cache = tmp_path / "hf-cache"
    ids = fill_cache(cache, tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    run = tmp_path / "run"
    # seconds, not hours: little data, few pairs, short texts (a 128,256-id head costs most of the scoring),
    # the paper's five merge methods (the Fisher ones are tested elsewhere), one 05_eval job per setup
    small = ["char_budget=60000", "max_docs_per_lang=1500", "heldout_max_docs=20", "code_max_bytes=30000",
             "seq_len=256", "blimp_pairs_per_paradigm=1", "multiblimp_pairs_per_phenomenon=2", "eval_max_bytes=600",
             "merge_methods=[linear, multislerp, task_arithmetic, ties, dare_ties]", "eval_jobs=per_setup"]
    res = run_cli("reproduce", "--scale", "released", "--langs", ",".join(LANGS), "--jobs", "2",
                  "--run-dir", run, *[a for s in small for a in ("--set", s)])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (run / "REPORT.md").is_file() and len(list((run / "notebooks").glob("0*.ipynb"))) == 12

    manifest = json.loads((run / "manifest.json").read_text())["steps"]
    fetched = {e["repo_id"] for e in manifest.values() if "repo_id" in e and not e.get("absent")}
    absent = {e["repo_id"] for e in manifest.values() if e.get("absent")}
    assert fetched == set(ids)  # every published id, and nothing else
    assert absent == {f"liu-nlp/hyperllama-572m-{name}-{setup}-matching-1x"
                      for name in ("faroese", "multilingual") for setup in ("1x-cloned", "2x")}
    results = artifacts.Manifest(run)
    assert results.entry("eval/matching-2x-est") is not None and results.entry("eval/merged-2x-dare_ties") is not None
