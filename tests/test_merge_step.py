"""04_merge's grid: language subsets, paths and step names (hyperllama_lib.pipeline.merge)."""
from __future__ import annotations

from hyperllama_lib.params import load_params
from hyperllama_lib.pipeline import layout


def test_subsets_full_and_all(tmp_path):
    p = load_params("smoke", {"run_dir": str(tmp_path), "langs": ["est", "fao", "isl", "fas", "swe"]},
                    need_data=False)
    assert layout.merge_subsets(p) == [("est", "fao", "isl", "fas", "swe")]
    p.merge_subsets = "all"
    every = layout.merge_subsets(p)
    assert len(every) == 26 and len(set(every)) == 26  # the paper's 26 subsets of >= 2 languages
    assert every[0] == tuple(p.langs) and all(len(s) >= 2 for s in every)
    paths = {layout.of(p).merged_model("1x", "ties", s) for s in every}
    assert len(paths) == 26
    assert layout.of(p).merged_model("1x", "ties", every[0]) == p.run_path / "models" / "merged" / "1x" / "ties"
    names = {layout.of(p).merge_step("1x", "ties", s) for s in every}
    assert len(names) == 26 and "merge/1x/ties" in names and "merge/1x/ties/est+fao" in names
