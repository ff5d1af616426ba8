"""Companion library to "Grow Up and Merge" (arXiv 2512.10772): data, HyperCloning, CPT, merging, evaluation.

`pipeline/` holds the six steps of the paper, one module per notebook (data, upscale, cpt, merge,
evaluate, analysis and report), the run layout and the grid runner. They are built on the building
blocks, one package per concept: `corpus/` (documents, UniMax, tokenizer, packed tokens), `models/`
(the HyperLlama architecture, HyperCloning, released checkpoints), `training/`, `merging/` (the
engine and the registry of methods) and `evaluation/` (scoring and the benchmark table), with
`artifacts/` (atomic writes, checkpoints, the manifest) underneath. README, "How the code is organised".

Importing the package registers the `hyperllama` model type (a Llama whose tied output head is the
embedding divided by `lm_head_normalization_factor`) with transformers' Auto classes, so released and
cloned 572M-style checkpoints load with `AutoModelForCausalLM.from_pretrained` without trust_remote_code.
"""
import importlib
import warnings

__version__ = "0.1.0"

# In a kernel without ipywidgets (papermill's, the `make test` environment) the libraries we import get text
# bars from tqdm.auto, as our own bars do there (hyperllama_lib.progress): its "IProgress not found" is no news.
warnings.filterwarnings("ignore", message="IProgress not found")

from .models.modeling import register as _register  # noqa: E402

_register()

# Where the modules of release 0.1's flat layout live now. `hl.data`, `hl.merge_grid`, ... keep working
# for one release, with a DeprecationWarning.
MOVED = {
    "data": "pipeline.data", "upscale": "pipeline.upscale", "cpt": "pipeline.cpt",
    "merge_grid": "pipeline.merge", "eval_grid": "pipeline.evaluate", "analysis": "pipeline.analysis",
    "report": "pipeline.report", "grid": "pipeline.runner",
    "unimax": "corpus.unimax", "tokenizer": "corpus.tokenizer", "packing": "corpus.packing",
    "modeling": "models.modeling", "cloning": "models.cloning", "released": "models.released",
    "distributed": "training.distributed", "fisher": "merging.fisher_information",
    "merge_methods": "merging.methods", "fast_llama": "evaluation.fast_llama",
    "prefix_tree": "evaluation.prefix_tree", "pair_sources": "evaluation.pair_sources",
    "ud_pairs": "evaluation.ud_pairs",
}


def __getattr__(name: str):
    """Subpackages load on first use (`hl.pipeline`, `hl.evaluation`, ...), keeping `import hyperllama_lib`
    light; old flat names resolve to their new modules."""
    if name in MOVED:
        warnings.warn(f"hyperllama_lib.{name} moved to hyperllama_lib.{MOVED[name]}; the old name goes away in "
                      "the next release", DeprecationWarning, stacklevel=2)
        return importlib.import_module(f".{MOVED[name]}", __name__)
    try:
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as e:
        if e.name == f"{__name__}.{name}":
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
        raise


def _quiet_transformers() -> None:
    # Per-tensor "Loading weights" / "Writing model shards" bars drown the pipeline's own progress.
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


_quiet_transformers()
