"""A look inside each step, from the run's own outputs: the notebooks' short cells that show the mechanism
(UniMax by hand, packed tokens decoded, a HyperCloned weight, the LR schedule, TIES on one tensor, a minimal
pair token by token). Each reads one tensor or runs one sentence, so it costs well under a second at the
smoke and tiny scales. Where a job's run has no such artifact (a hub run trains nothing, a merge store of
recipes writes no tensors), a function returns a one-line note (str) instead of a table or figure."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors import safe_open

from .. import languages
from ..artifacts import checkpoints
from ..corpus import packing
from ..corpus import tokenizer as tok_lib
from ..merging.methods._base import magnitude_prune
from ..params import Params
from ..training.loop import lr_factor
from . import data, layout


def show(*shown) -> None:
    """Display what the functions below return: a note (str) as Markdown, tuples item by item."""
    from IPython.display import Markdown, display

    for item in shown:
        if isinstance(item, tuple):
            show(*item)
        else:
            display(Markdown(item) if isinstance(item, str) else item)


# -- 01_data ---------------------------------------------------------------------------------------


def unimax_by_hand(p: Params) -> pd.DataFrame:
    """UniMax step by step: languages from the smallest to the largest, each taking the rest of the budget
    split evenly over the languages left, capped at max_epochs passes over its data; next to 01_data's table."""
    plan = data.load_plan(p)
    available = plan["available_chars"]
    remaining, rows = float(p.char_budget), []
    for i, lang in enumerate(sorted(available, key=lambda k: (available[k], k))):
        even = remaining / (len(available) - i)
        cap = p.max_epochs * available[lang]
        take = min(even, cap)
        rows.append({"lang": lang, "available_chars": available[lang], "budget_left": round(remaining),
                     "even_share": round(even), "cap (max_epochs x available)": round(cap), "takes": round(take),
                     "capped": cap < even, "epochs": round(take / available[lang], 3),
                     "budget_table": plan["unimax_chars"][lang]})
        remaining -= take
    return pd.DataFrame(rows)


def first_tokens(p: Params, stream: str | None = None, n: int = 16) -> pd.DataFrame | str:
    """The first n tokens of a packed training stream (the first target language by default), decoded."""
    stream = stream or p.langs[0]
    path = layout.of(p).data.train(stream)
    if not path.is_file():
        return f"No packed stream `{stream}` in this run."
    ids = np.asarray(packing.PackedTokens(path).tokens[:n]).tolist()
    tok = tok_lib.load_tokenizer(layout.of(p).data.tokenizer)
    return pd.DataFrame({"position": range(len(ids)), "id": ids,
                         "token": [repr(tok.decode([i])) for i in ids]}).set_index("position").T


# -- 02_upscale ------------------------------------------------------------------------------------

def clone_pair(p: Params) -> tuple[Path, Path] | None:
    """The seed and its HyperClone (trained runs), else the 1x base and its clone (hub runs with 1x_cloned)."""
    where = layout.of(p)
    for src, dst in (("seed", "seed_x2"), ("base_1x", "base_1x_cloned")):
        if (where.english_model(src) / "config.json").is_file() and (where.english_model(dst) / "config.json").is_file():
            return where.english_model(src), where.english_model(dst)
    return None


def _tensor(model_dir: Path, name: str) -> torch.Tensor:
    with safe_open(str(checkpoints.tensor_files(Path(model_dir))[name]), "pt") as st:
        return st.get_tensor(name).float()


def cloned_weight(p: Params, name: str = "model.layers.0.self_attn.q_proj.weight", k: int = 4) -> pd.DataFrame | str:
    """One row of an attention weight in the seed and in its clone: the clone's row is the seed's row twice
    (tiled on the input side) divided by 2, and the row repeats lower down (tiled on the output side)."""
    pair = clone_pair(p)
    if pair is None:
        return "No seed and clone in this run (a hub run without the 1x_cloned setup clones nothing)."
    w, c = _tensor(pair[0], name), _tensor(pair[1], name)
    rows, cols = w.shape
    table = {f"seed {name.split('.')[-2]}[0, :{k}]": w[0, :k],
             f"clone [0, :{k}]": c[0, :k], f"clone [0, {cols}:{cols + k}]": c[0, cols:cols + k],
             f"clone [{rows}, :{k}]": c[rows, :k],
             "clone left + right half": c[0, :k] + c[0, cols:cols + k]}
    return pd.DataFrame({key: v.numpy() for key, v in table.items()}).T.round(5)


def next_token_distributions(p: Params, top: int = 5) -> tuple[pd.DataFrame, float] | str:
    """The next-token distribution after the first English held-out sentence, from the seed and from its
    clone: the top tokens side by side and the largest probability difference over the whole vocabulary."""
    from ..models import modeling

    pair = clone_pair(p)
    if pair is None:
        return "No seed and clone in this run (a hub run without the 1x_cloned setup clones nothing)."
    tok = tok_lib.load_tokenizer(pair[0])
    text = layout.of(p).data.heldout(languages.ENGLISH).read_text().split("\n", 1)[0][:200]
    ids = torch.tensor([[tok.bos_token_id, *tok.encode(text, add_special_tokens=False)][:64]])
    probs = []
    with torch.no_grad():
        for folder in pair:
            logits = modeling.load_model(folder).eval()(ids).logits[0, -1]
            probs.append(torch.softmax(logits.double(), -1))
    best = torch.argsort(probs[0], descending=True)[:top]
    table = pd.DataFrame({"token": [repr(tok.decode([int(i)])) for i in best],
                          "p(seed)": probs[0][best].numpy(), "p(clone)": probs[1][best].numpy()})
    gap = float((probs[0] - probs[1]).abs().max())
    return table, f"After {text[:60]!r}: the largest probability difference over all {len(probs[0])} tokens is {gap:.1e}."


# -- 03_cpt ----------------------------------------------------------------------------------------

def _figure(width: float = 6.0, height: float = 2.6):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height))
    plt.close(fig)  # shown by display(fig), once
    return fig, ax


def lr_schedule(p: Params):
    """The learning rate at every step of this language's CPT, per setup (warm-up, constant, linear decay)."""
    if p.models_from == "hub":
        return "No learning-rate schedule: the models were fetched, not trained."
    plan = data.load_plan(p)["cpt_steps"]
    fig, ax = _figure()
    for lang in _trained(p):
        steps = plan[lang]
        for setup in p.setups:
            peak = p.lora_lr if setup.endswith("_lora") else p.lr
            ax.plot(range(steps), [peak * lr_factor(s, steps, p.warmup_steps, p.decay_fraction) for s in range(steps)],
                    label=f"{setup} on {lang} ({steps} steps)")
    ax.set(xlabel="step", ylabel="learning rate", title=f"CPT on {p.lang}")
    ax.legend(fontsize="small")
    return fig


def _trained(p: Params) -> list[str]:
    """The languages this 03_cpt job trains on: one, multilingual, or each of the run's (`lang: each`)."""
    return list(p.langs) if p.lang == languages.EACH else [p.lang]


def bpb_curves(p: Params, curves: pd.DataFrame):
    """Held-out bits per byte at every checkpoint of this language's CPT, per setup and evaluated language."""
    mine = curves[curves.trained_on.isin(_trained(p))] if not curves.empty else curves
    if mine.empty:
        return "No training curves: the models were fetched, not trained."
    fig, ax = _figure()
    for (setup, trained_on, lang), rows in mine.groupby(["setup", "trained_on", "lang"]):
        ax.plot(rows.tokens, rows.bpb, marker="o", label=f"{setup}-{trained_on} on {lang}")
    ax.set(xlabel="target-language training tokens", ylabel="held-out bits per byte", title=f"CPT on {p.lang}")
    ax.legend(fontsize="small")
    return fig


# -- 04_merge --------------------------------------------------------------------------------------

def ties_by_hand(p: Params, setup: str | None = None,
                 name: str = "model.layers.0.mlp.down_proj.weight") -> tuple[pd.DataFrame, str] | str:
    """TIES on one tensor of the five-language merge, step by step: task vectors against the merge's base,
    trim each to the top merge_density share by magnitude, elect the sign of their sum, average the entries
    that agree (the disjoint mean). Per language: kept share and the share of its kept entries that the
    election overrules; then the result against the saved merged tensor."""
    from . import merge

    setup = setup or p.setups[0]
    where = layout.of(p)
    models = [where.cpt_model(setup, lang) for lang in p.langs]
    base = merge._base_model(p, merge.base_step(p, setup, "ties", tuple(p.langs)))
    if len(models) < 2 or not all((m / "config.json").is_file() for m in [base, *models]):
        return f"No {setup} models of every language in this run: nothing to merge."
    b = _tensor(base, name)
    trimmed = [magnitude_prune(_tensor(m, name) - b, p.merge_density) * p.merge_weight for m in models]
    elected = torch.where(sum(trimmed) >= 0, 1.0, -1.0)
    agree = [(d * elected > 0) for d in trimmed]
    count = sum(a.float() for a in agree)
    merged = b + sum(d * a for d, a in zip(trimmed, agree)) / (count / p.merge_weight).clamp(min=1)
    kept = [(d != 0) for d in trimmed]
    table = pd.DataFrame({"lang": p.langs, "kept": [float(k.float().mean()) for k in kept],
                          "overruled (share of kept)": [float((k & ~a).sum() / k.sum().clamp(min=1))
                                                        for k, a in zip(kept, agree)]})
    pos = sum(((d > 0).float() for d in trimmed)) > 0
    neg = sum(((d < 0).float() for d in trimmed)) > 0
    note = f"`{name}` of {setup}: kept entries of different languages disagree in sign at " \
           f"{float((pos & neg).float().mean()):.1%} of positions. "
    saved = where.merged_model(setup, "ties")
    if "ties" not in p.merge_methods or not list(saved.glob("*.safetensors")):
        return table, note + "No saved TIES tensor to compare with (ties not merged, or stored as a recipe)."
    diff = float((merged - _tensor(saved, name)).abs().max())
    return table, note + f"By hand vs the saved merged tensor ({json.loads((saved / 'merge.json').read_text()).get('dtype', p.merge_dtype)}): " \
                         f"largest difference {diff:.1e}."


# -- 05_eval ---------------------------------------------------------------------------------------

def example_pairs(p: Params) -> dict[str, tuple[str, str]]:
    """One BLiMP pair (English) and one MultiBLiMP pair (the first target language), from local files."""
    from ..evaluation import pair_sources

    out = {}
    blimp = sorted((p.data_path / "blimp").glob("*.jsonl*"))
    if blimp:
        first = pair_sources.read_blimp_jsonl(blimp[0])[0]
        out[f"BLiMP {first['paradigm']}"] = (first["good"], first["bad"])
    lang = p.langs[0]
    released = p.multiblimp_path / lang / "data.tsv" if p.multiblimp_path else None
    path = released if released is not None and released.is_file() else layout.of(p).data.multiblimp(lang)
    if path.is_file():
        first = pair_sources.load_multiblimp_local(path, lang=lang).iloc[0]
        out[f"MultiBLiMP {lang} {first['paradigm']}"] = (first["good"], first["bad"])
    return out


def _token_logprobs(model, tok, sentence: str) -> tuple[list[str], np.ndarray]:
    ids = [tok.bos_token_id, *tok.encode(sentence, add_special_tokens=False)]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1].double(), -1)
    return [tok.decode([i]) for i in ids[1:]], logp[torch.arange(len(ids) - 1), ids[1:]].numpy()


def pair_token_by_token(p: Params, good: str, bad: str, setups: tuple[str, ...] = ("1x", "2x")) -> pd.DataFrame | str:
    """log p(token | BOS and the tokens before it) of both sentences of a pair under the English bases of
    `setups`; the pair counts as correct when the good sentence's sum is higher."""
    from ..models import modeling

    where = layout.of(p)
    folders = {s: where.base_model(s) for s in setups if (where.base_model(s) / "config.json").is_file()}
    if not folders:
        return f"No {' or '.join(setups)} English base in this run."
    tok = tok_lib.load_tokenizer(next(iter(folders.values())))
    models = {setup: modeling.load_model(folder).eval() for setup, folder in folders.items()}
    rows, sums = {}, {}
    for which, sentence in (("good", good), ("bad", bad)):
        for setup, model in models.items():
            tokens, logp = _token_logprobs(model, tok, sentence)
            rows[(which, f"log p ({setup})")] = list(logp.round(2))
            sums[(which, f"log p ({setup})")] = round(float(logp.sum()), 2)
        rows[(which, "token")] = [repr(t) for t in tokens]
    table = pd.DataFrame.from_dict(rows, orient="index")
    table["SUM"] = pd.Series(sums)
    table = table.astype(object).where(table.notna(), "")
    table.index = pd.MultiIndex.from_tuples(table.index, names=["sentence", ""])
    return table
