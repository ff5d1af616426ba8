"""The run directory: every path of a run and every step name of its manifest, in one place.

    runs/<scale>/                       (run_dir; one per scale unless run_dir says otherwise)
        manifest.json                   finished steps: fingerprint, parameters, output hashes, code version
        data/                           01_data: tokenizer/, train/<stream>.bin, docs/ (per-source token
                                        files), heldout/ and udhr/<lang>.txt, multiblimp/<lang>/data.tsv
                                        and counts.csv, stats.csv, plan.json
        models/english/<name>/          02_upscale: seed, seed_x2, base_1x, base_2x, base_1x_cloned
        models/cpt/<setup>/<lang>/      03_cpt: final/, checkpoints/step_N/, curve.csv, train_log.csv,
                                        adapter/ (*_lora setups: the peft adapter; final/ has it folded in),
                                        matching_1x/ (hub runs: the released FLOP-matched checkpoint)
        models/merged/<setup>/<method>/ 04_merge (subsets: models/merged/<setup>/subsets/<a+b>/<method>/)
        fisher/<setup>/<lang>.safetensors   04_merge: each CPT model's diagonal Fisher
        results/models/<model>.csv      05_eval: one model's rows; results/results.csv all of them
        notebooks/, grid/               the grid runner: executed notebooks (+ .html, .log), job records
Inside a training stage's folder the names are training/stage_folder.py's (final/, checkpoints/, resume/).

Manifest step names: `data`, `english/<name>`, `cpt/<setup>/<lang>`, `fisher/<setup>/<lang>`,
`cpt/<setup>/<lang>/matching_1x`, `merge/<setup>/<method>[/<a+b>]` and `eval/<model>[@<step>]`. `require` turns a missing one into the
notebook to run first.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from .. import artifacts
from ..errors import MissingInputError
from ..params import Params
from ..training.stage_folder import StageFolder

# authors_base_2x: the released base_model of the authors' five-language 2x TIES / DARE-TIES merges (hub runs)
AUTHORS_BASE_2X = "authors_base_2x"
ENGLISH_MODELS = ("seed", "seed_x2", "base_1x", "base_2x", "base_1x_cloned", AUTHORS_BASE_2X)
BASE_FOR_SETUP = {"1x": "base_1x", "1x_cloned": "base_1x_cloned", "2x": "base_2x",
                  "1x_lora": "base_1x", "1x_cloned_lora": "base_1x_cloned", "2x_lora": "base_2x"}
DATA_STEP = "data"
# the notebook that writes each kind of manifest step (the first part of its name)
NOTEBOOK_OF_STEP = {"data": "01_data", "english": "02_upscale", "cpt": "03_cpt", "fisher": "04_merge",
                    "merge": "04_merge", "eval": "05_eval"}


@dataclass(frozen=True)
class DataPaths:
    """01_data's outputs."""
    root: Path

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    def train(self, name: str) -> Path:
        """The packed stream of a training stage: a target language, "multilingual", "seed" or "base"."""
        return self.root / "train" / f"{name}.bin"

    def docs(self, name: str) -> Path:
        """Every kept document of a source once, tokenised, with document offsets."""
        return self.root / "docs" / f"{name}.bin"

    @property
    def staging(self) -> Path:
        """Cleaned text between the Hub stream and the tokenizer (removed when 01_data ends)."""
        return self.root / "staging"

    def heldout(self, lang: str) -> Path:
        return self.root / "heldout" / f"{lang}.txt"

    def udhr(self, lang: str) -> Path:
        return self.root / "udhr" / f"{lang}.txt"

    def multiblimp(self, lang: str) -> Path:
        """MultiBLiMP-style pairs built from the language's held-out UD files."""
        return self.root / "multiblimp" / lang / "data.tsv"

    @property
    def multiblimp_counts(self) -> Path:
        """Pairs per language and phenomenon; also as .md beside it."""
        return self.root / "multiblimp" / "counts.csv"

    @property
    def stats(self) -> Path:
        return self.root / "stats.csv"

    @property
    def plan(self) -> Path:
        return self.root / "plan.json"


def merge_subsets(p: Params) -> list[tuple[str, ...]]:
    """The language sets 04_merge merges: all of p.langs, or (`merge_subsets: all`) every subset of at
    least two of them, largest first (the paper's 26 for five languages)."""
    langs = tuple(p.langs)
    if p.merge_subsets == "full" or len(langs) < 2:
        return [langs]
    return [c for size in range(len(langs), 1, -1) for c in combinations(langs, size)]


def subset_label(langs: tuple[str, ...]) -> str:
    return "+".join(langs)


@dataclass(frozen=True)
class RunLayout:
    root: Path
    langs: tuple[str, ...]  # the run's target languages: a merge of all of them is "the" merge

    # -- 01_data ---------------------------------------------------------------------------------
    @property
    def data(self) -> DataPaths:
        return DataPaths(self.root / "data")

    # -- 02_upscale ------------------------------------------------------------------------------
    def english_dir(self, name: str) -> Path:
        return self.root / "models" / "english" / name

    def english_model(self, name: str) -> Path:
        return StageFolder(self.english_dir(name)).final

    def base_model(self, setup: str) -> Path:
        """The English base a setup adapts (and its task vectors are taken against)."""
        return self.english_model(BASE_FOR_SETUP[setup])

    # -- 03_cpt ----------------------------------------------------------------------------------
    def cpt_dir(self, setup: str, lang: str) -> Path:
        return self.root / "models" / "cpt" / setup / lang

    def cpt_model(self, setup: str, lang: str) -> Path:
        return StageFolder(self.cpt_dir(setup, lang)).final

    def cpt_checkpoints(self, setup: str, lang: str) -> Path:
        return StageFolder(self.cpt_dir(setup, lang)).checkpoints

    def cpt_adapter(self, setup: str, lang: str) -> Path:
        """A *_lora setup's adapter in peft's format (final/ holds it folded into the base)."""
        return StageFolder(self.cpt_dir(setup, lang)).adapter

    def cpt_curve(self, setup: str, lang: str) -> Path:
        return StageFolder(self.cpt_dir(setup, lang)).curve

    def cpt_matching(self, setup: str, lang: str) -> Path:
        """The released "-matching-1x" checkpoint of a 572M run (models/released.py), hub runs only."""
        return self.cpt_dir(setup, lang) / "matching_1x"

    # -- 04_merge --------------------------------------------------------------------------------
    def is_full(self, langs: tuple[str, ...] | None) -> bool:
        return langs is None or tuple(langs) == self.langs

    def merged_model(self, setup: str, method: str, langs: tuple[str, ...] | None = None) -> Path:
        root = self.root / "models" / "merged" / setup
        return root / method if self.is_full(langs) else root / "subsets" / subset_label(langs) / method

    def fisher_file(self, setup: str, lang: str) -> Path:
        return self.root / "fisher" / setup / f"{lang}.safetensors"

    # -- 05_eval ---------------------------------------------------------------------------------
    @property
    def results(self) -> Path:
        return self.root / "results" / "results.csv"

    def model_results(self, key: str) -> Path:
        return self.root / "results" / "models" / f"{key}.csv"

    # -- the grid runner -------------------------------------------------------------------------
    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    def executed_notebook(self, label: str) -> Path:
        return self.notebooks / f"{label}.ipynb"

    @property
    def grid(self) -> Path:
        return self.root / "grid"

    def job_record(self, label: str) -> Path:
        return self.grid / f"{label}.json"

    # -- manifest step names ---------------------------------------------------------------------
    @staticmethod
    def english_step(name: str) -> str:
        return f"english/{name}"

    @staticmethod
    def base_step(setup: str) -> str:
        return f"english/{BASE_FOR_SETUP[setup]}"

    @staticmethod
    def cpt_step(setup: str, lang: str) -> str:
        return f"cpt/{setup}/{lang}"

    @staticmethod
    def matching_step(setup: str, lang: str) -> str:
        return f"cpt/{setup}/{lang}/matching_1x"

    @staticmethod
    def fisher_step(setup: str, lang: str) -> str:
        return f"fisher/{setup}/{lang}"

    def merge_step(self, setup: str, method: str, langs: tuple[str, ...] | None = None) -> str:
        return f"merge/{setup}/{method}" + ("" if self.is_full(langs) else f"/{subset_label(langs)}")

    @staticmethod
    def eval_step(key: str) -> str:
        return f"eval/{key}"


def of(p: Params) -> RunLayout:
    """The layout of p's run directory."""
    return RunLayout(p.run_path, tuple(p.langs))


def require(p: Params, step: str) -> str:
    """The fingerprint of a finished manifest step; MissingInputError naming the notebook to run if none."""
    fp = artifacts.step_fingerprint(p.run_path, step)
    if fp is None:
        notebook = NOTEBOOK_OF_STEP[step.split("/")[0]]
        raise MissingInputError(f"step {step!r} has no outputs in {p.run_path}; "
                                f"run notebooks/{notebook}.ipynb first (same scale and run_dir)")
    return fp
