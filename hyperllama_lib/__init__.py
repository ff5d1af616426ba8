"""Companion library to "Grow Up and Merge" (arXiv 2512.10772): data, HyperCloning, CPT, merging, evaluation.

One module per pipeline step (data, upscale, cpt, merge_grid, eval_grid, analysis) on top of the
building blocks (corpus, unimax, tokenizer, packing, modeling, cloning, training, merging,
pair_sources, evaluation, ...).
Importing the package registers the `hyperllama` model type (a Llama whose tied output head is the
embedding divided by `lm_head_normalization_factor`) with transformers' Auto classes, so released and
cloned 572M-style checkpoints load with `AutoModelForCausalLM.from_pretrained` without trust_remote_code.
"""
import importlib

__version__ = "0.1.0"

from .modeling import register as _register  # noqa: E402

_register()


def __getattr__(name: str):
    """Submodules load on first use (`hl.data`, `hl.cpt`, ...), keeping `import hyperllama_lib` light."""
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
