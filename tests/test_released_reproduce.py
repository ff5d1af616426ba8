"""`hyperllama reproduce --scale released` end to end, all six notebooks, against a stand-in Hub.

The stand-in is the Hub's own local cache, filled with small models of every released kind (180M format:
llama; 572M format: hyperllama with head factor 2 and an auto_map to remote code that must not run) and the
paper's evaluation sets, which huggingface_hub itself reads with HF_HUB_OFFLINE=1 in every notebook kernel.
The cache keys on the exact spelling of an id, so a run that asked for any other spelling would stop.

For speed the run uses a small corpus BPE instead of the Llama-3 tokenizer (a 128,256-id head makes every
score slow on a CPU): 01_data runs first, and the stand-ins are saved with the tokenizer it made, as the
released models carry theirs.
"""
from __future__ import annotations

import json

from conftest import run_cli
from released_hub import TINY, published, stand_ins, write_cache

from hyperllama_lib import artifacts
from hyperllama_lib.corpus import tokenizer as tok_lib

LANGS = ["est", "fao"]
MULTIBLIMP = "sen\twrong_sen\tphenomenon\tlang\n" + "".join(
    f"The {n} sleeps .\tThe {n} sleep .\tSV-#\t{{lang}}\n" for n in ("dog", "cat", "bird"))
BLIMP_SINGLE_ERROR = [{"sentence_good": f"The {n} sleeps.", "sentence_bad": f"The {n} sleep.",
                       "UID": "agreement", "field": "morphology", "linguistics_term": "s-v agreement"}
                      for n in ("dog", "cat")]
MPARAREL = {"en": ("Tallinn is in Estonia.", "Tallinn is in Peru."),
            "et": ("Tallinn on Eestis.", "Tallinn on Peruus."), "fo": ("Tórshavn er í Føroyum.", "Tórshavn er í Peru.")}
SMALL = ["char_budget=60000", "max_docs_per_lang=1500", "heldout_max_docs=20", "code_max_bytes=30000",
         "tokenizer=bpe", "bpe_vocab_size=512", "seq_len=64", "blimp_pairs_per_paradigm=1",
         "multiblimp_pairs_per_phenomenon=2", "eval_max_bytes=600", "eval_jobs=per_setup",
         "merge_methods=[linear, multislerp, task_arithmetic, ties, dare_ties, fisher_ties]", "fisher_tokens=256"]


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def fill_cache_with_the_evaluation_sets(cache, tmp_path) -> None:
    multiblimp = tmp_path / "multiblimp"
    for lang in ("eng", *LANGS):
        (multiblimp / lang).mkdir(parents=True)
        (multiblimp / lang / "data.tsv").write_text(MULTIBLIMP.format(lang=lang))
    write_cache(cache, "jumelet/multiblimp", multiblimp, repo_type="dataset")
    single_error = tmp_path / "blimp-single-error"
    single_error.mkdir()
    (single_error / "test.jsonl").write_text(jsonl(BLIMP_SINGLE_ERROR))
    write_cache(cache, "liu-nlp/blimp-single-error", single_error, repo_type="dataset")
    mpararel = tmp_path / "mpararel"
    for lang, (good, bad) in MPARAREL.items():
        (mpararel / "data" / lang).mkdir(parents=True)
        (mpararel / "data" / lang / "test.jsonl").write_text(jsonl([{"good": good, "bad": bad, "relation": "P17"}]))
    write_cache(cache, "liu-nlp/minimal_pair_mpararel", mpararel, repo_type="dataset")


def test_reproduce_released_runs_every_notebook_on_the_published_ids(tmp_path, monkeypatch, data_dir):
    cache, run = tmp_path / "hf-cache", tmp_path / "run"
    fill_cache_with_the_evaluation_sets(cache, tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    args = ["reproduce", "--scale", "released", "--langs", ",".join(LANGS), "--jobs", "2", "--run-dir", run,
            *[a for s in SMALL for a in ("--set", s)]]
    assert run_cli(*args, "--only", "data").returncode == 0
    tok = tok_lib.load_tokenizer(run / "data" / "tokenizer")
    ids = published(LANGS, matching=("est",))
    for repo, folder in stand_ins(tmp_path / "models", ids, {**TINY, "vocab_size": len(tok)}, tok).items():
        write_cache(cache, repo, folder)

    res = run_cli(*args)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (run / "REPORT.md").is_file() and len(list((run / "notebooks").glob("0*.ipynb"))) == 12
    manifest = json.loads((run / "manifest.json").read_text())["steps"]
    fetched = {e["repo_id"] for e in manifest.values() if "repo_id" in e and not e.get("absent")}
    absent = {e["repo_id"] for e in manifest.values() if e.get("absent")}
    assert fetched == set(ids)  # every published id, and nothing else
    assert absent == {f"liu-nlp/hyperllama-572m-{name}-{setup}-matching-1x"
                      for name in ("faroese", "multilingual") for setup in ("1x-cloned", "2x")}
    assert artifacts.Manifest(run).entry("eval/matching-2x-est") is not None
    assert [f.name for f in (run / "models" / "merged" / "2x" / "dare_ties").iterdir()] == ["recipe.json"]

    results = (run / "results" / "results.csv").read_text()
    for benchmark in ("blimp-single-error", "mpararel", "multiblimp"):
        assert f",{benchmark}," in results
    assert ",multiblimp,fao,n_pairs,2.0,released" in results  # the released files, not the built pairs
    report = (run / "REPORT.md").read_text()
    assert "flop_matched_released" in report and "-matching-1x" in report
