"""Writes notebooks/*.ipynb (without outputs) from the cell sources below: edit here, run, commit both.

The notebooks are generated: an edit made in JupyterLab is overwritten by the next run of this script, and
tests/test_notebooks.py fails while the committed notebooks differ from what it writes."""
from pathlib import Path

import nbformat as nbf
import tomllib

from hyperllama_lib.jupyter_kernel import KERNELSPEC

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "notebooks"
REPOSITORY = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
# First code cell of every notebook: on Colab, fetch the repository (params/ and notebooks/ live beside the
# package) and install it; elsewhere it does nothing.
COLAB = f"""# On Colab: clone and install the companion (a few minutes; the GPU runtime is best). Elsewhere: nothing.
import os, subprocess, sys
if "google.colab" in sys.modules and not os.path.isdir("/content/hyperllama"):
    subprocess.run(["git", "clone", "--depth", "1", "{REPOSITORY}", "/content/hyperllama"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "/content/hyperllama"], check=True)
if "google.colab" in sys.modules:
    sys.path.insert(0, "/content/hyperllama")  # the editable install is seen only after a restart
    os.chdir("/content/hyperllama/notebooks")"""
SETUP = """from hyperllama_lib import params
from hyperllama_lib.pipeline import layout, {steps}
from IPython.display import Markdown, display

P = params.from_notebook(globals())  # YAML of the scale + papermill -p overrides; stops on anything unknown
print(f"scale={P.scale}  run_dir={P.run_path}  data_dir={P.data_path}")"""

def nb(name, cells):
    book = nbf.v4.new_notebook()
    book.metadata = {"kernelspec": dict(KERNELSPEC),
                     "language_info": {"name": "python"}}
    out = []
    cells = [cells[0], ("code", COLAB), *cells[1:]]
    for i, (kind, src, *tags) in enumerate(cells):
        c = nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src)
        c["id"] = f"{name.split('_')[0]}-{i:02d}"
        if tags:
            c.metadata["tags"] = tags
        out.append(c)
    book.cells = out
    return book

PARAMS = ("code", '# Parameters (papermill -p overrides these and any key of params/<scale>.yaml)\nscale = "tiny"  # smoke | tiny | small | small_t4 | paper | released', "parameters")

books = {
"01_data": [
("md", """# 01 · Data: corpora, decontamination, UniMax budgets, replay, tokenizer, packed tokens

**Paper step.** The authors adapt English models to Estonian, Faroese, Icelandic, Persian and Swedish using
FineWeb-2 (`ekk_Latn`, `fao_Latn`, `isl_Latn`, `fas_Arab`, `swe_Latn`). Per-language token budgets come from
**UniMax** sampling (a character budget spread as evenly as possible over the languages, each capped at
6 epochs of its data). Each language's training mix gets **English replay**: Swedish receives 1% of the 80%
English split and 5% of the code data, the other languages that amount scaled by their share of documents.

**Here.** Offline, the corpora are the real texts in `../shared/data` (or the Hub with `data_source: hub`).
This notebook

1. reads each language, removes duplicates across files,
2. removes every training document that is, or contains, a sentence of an evaluation set
   (BLiMP, the UDHR used as a parallel held-out text, the MultiBLiMP pairs built below, pair files),
3. splits a deterministic held-out set (stable hash of the text),
4. splits English 80% (seed) / 20% (bases) as the authors did,
5. computes UniMax budgets and the replay mix, trains or loads the tokenizer (a corpus BPE at
   smoke/tiny, the real Llama-3 tokenizer with 128,256 ids at small/paper), and
6. writes packed token streams for every training stage."""),
PARAMS,
("code", SETUP.replace("{steps}", "data")),
("code", """stats = data.prepare(P)
stats"""),
("md", """`epochs` is the UniMax allocation divided by the available characters (capped at `max_epochs`),
`replay_share_samples` the share of documents in the mix that are English or code replay, and `steps`
the optimiser steps one pass over the stream takes (`global_batch_size x seq_len` tokens each)."""),
("code", """plan = data.load_plan(P)
print(f"vocabulary: {plan['vocab_size']} ids; seed {plan['seed_steps']} steps, bases {plan['base_steps']} steps "
      f"-> cloning after {plan['clone_after_fraction_of_english_steps']:.0%} of the English steps (paper: ~81%)")
plan['cpt_steps']"""),
("md", """**A look inside.** UniMax by hand: the languages from the smallest to the largest, each taking the budget
left split evenly over the languages left, but at most `max_epochs` passes over its data (`budget_table`: the
allocation 01_data used)."""),
("code", """from hyperllama_lib.pipeline import inside
inside.show(inside.unimax_by_hand(P))"""),
("md", """The first tokens of the first target language's packed training stream, decoded one by one: documents
are concatenated, each starting with the BOS token."""),
("code", """inside.show(inside.first_tokens(P))"""),
("md", """## Target-language grammar: MultiBLiMP-style pairs built from Universal Dependencies

The paper measures grammar in the target languages with **MultiBLiMP 1.0**, minimal pairs built
automatically from UD treebanks and UniMorph; its files are on the Hub, which is not reachable offline.
This step rebuilds such pairs (`hyperllama_lib/evaluation/ud_pairs.py`, also `hyperllama build-pairs`) from each
language's **held-out** UD files (test, or dev where a treebank has no test):

* keep the sentences MultiBLiMP keeps (no typos, foreign words, style or correction marks, reparanda;
  at most 64 words);
* find a NOUN or PRON subject of a verb and the word that agrees with it, as MultiBLiMP's pipeline does:
  the verb's first auxiliary or copula, else the verb (SV-#, SV-P, SV-G: number, person, gender), and a
  participle verb itself (SP-#, SP-P, SP-G), skipping conjoined subjects and clauses with expletive or
  outer subjects; English number only in the present third person;
* swap that word for every form that UniMorph and the treebanks (multi-word-token parts included, e.g.
  "'m") have for each other feature value, one pair per form; drop a form that is identical, ambiguous
  (also grammatical with the original features) or several words;
* balance: within a phenomenon, no feature value makes up more than half the items.

Every sentence of these pairs was removed from the training text above. 05_eval scores them (or the
released MultiBLiMP files, when `multiblimp_dir` or the Hub provides them). Pairs per language and
phenomenon (`before_balancing`: items found before balancing; `multiblimp_1_0`: items in the released
MultiBLiMP 1.0, a sample of at most 100 per condition drawn from all of each language's UD treebanks):"""),
("code", """counts = data.load_multiblimp_counts(P)
counts"""),
("md", """A sample of 20 pairs per language for inspection (`verb` is replaced by `wrong_verb` in the
ungrammatical sentence):"""),
("code", """import pandas as pd
from hyperllama_lib.evaluation import pair_sources
pd.set_option("display.max_colwidth", 120)
for lang in counts.lang:
    pairs = pair_sources.load_multiblimp_local(layout.of(P).data.multiblimp(lang), lang=lang)
    display(Markdown(f"**{lang}**: {len(pairs)} pairs"))
    display(pairs.sample(n=min(20, len(pairs)), random_state=P.seed)[
        ["paradigm", "grammatical_feature", "ungrammatical_feature", "child", "verb", "wrong_verb", "good"]])"""),
],
"02_upscale": [
("md", """# 02 · Upscale: English seed, HyperCloning x2, the 1x and 2x English bases

**Paper step.** A SmolLM2-135M-shaped model with the Llama-3 vocabulary and a GeGLU MLP (180M parameters)
is trained from scratch on code, then on 80% of the English data (the *seed*). From the seed:

* **1x base** = the seed trained on the remaining 20% English;
* **2x base** = the seed **HyperCloned** to twice the width (572M parameters), then trained on the same 20%;
* **1x_cloned base** = the 1x base HyperCloned, without further training.

HyperCloning (Samragh et al. 2024) maps every hidden vector `x` to `[x, x]`: linear layers are tiled and
divided by 2 on the input side, heads are copied, norms tiled, the embedding tiled, and the tied output head
divided by 2 (model type `hyperllama`, `lm_head_normalization_factor`). The clone computes exactly the same
function as its source, which this notebook checks (`clone_max_logit_difference`).

**Released models.** With `-p models_from hub` (the `released` scale) the notebook fetches the authors'
English bases from the Hub instead of training them (config, safetensors and tokenizer only; no remote
code): `liu-nlp/hyperllama-180m-english-1x` as the 1x base and `liu-nlp/hyperllama-572m-english-1x-cloned`
as the 2x base. The authors named the 572M English model after its origin, the seed HyperCloned; their 2x
training starts from it, so it is the trained 572M base (an inference, see `hyperllama_lib/models/released.py`).
The 1x_cloned base is cloned here from the fetched 1x base, as in training mode."""),
PARAMS,
("code", SETUP.replace("{steps}", "upscale")),
("code", """english = upscale.run(P)
english"""),
("code", """assert english.clone_max_logit_difference.dropna().max() < 1e-4, "a clone changed the function"
display(Markdown(f"Cloning preserved the logits to within {english.clone_max_logit_difference.max():.2e}."))"""),
("md", """**A look inside.** One row of the first attention query weight in the seed and in its HyperClone (a hub
run: the 1x base and its clone): the clone's row holds the seed's row twice, each half divided by 2, so on the
input `[x, x]` it computes the same number; the row appears again below (the copied heads)."""),
("code", """from hyperllama_lib.pipeline import inside
inside.show(inside.cloned_weight(P))"""),
("md", """The next-token distribution after an English held-out sentence, from the seed and from its clone: the same
to float rounding."""),
("code", """inside.show(inside.next_token_distributions(P))"""),
],
"03_cpt": [
("md", """# 03 · Continued pretraining (CPT) per language

**Paper step.** Each English base is trained further on one target language, in three setups:
`1x` (the 180M base), `1x_cloned` (the 180M base HyperCloned to 572M, then trained) and `2x` (the 572M
base, cloned earlier during English pretraining). All setups of a language see **identical data, steps and
schedule**; budgets come from 01_data. `lang = "multilingual"` trains the jointly trained model on all five
mixtures at once. Optimiser: AdamW (0.9, 0.95), weight decay 0.01, clip 1.0, warm-up, constant LR,
linear decay to 0 over the last 20%, a fresh optimiser per stage. Checkpoints are saved at fixed token
intervals and held-out bits per byte of the target language and of English are logged at each.

**LoRA setups** (beyond the paper): `1x_lora`, `2x_lora` and `1x_cloned_lora` train a peft LoRA adapter on
the same base with the same data, steps and schedule (`lora_rank`, `lora_alpha`, `lora_target_modules`,
`lora_lr`, `lora_embeddings`; README "LoRA language adapters"). The adapter is saved in peft's format
(`adapter/`) and folded into the base (`final/`), which is what evaluation and merging read. A LoRA step
costs 4 x N + 6 x N_lora FLOPs per token (no weight gradients for the frozen weights) against 6 x N.

Run once per language: `papermill notebooks/03_cpt.ipynb out.ipynb -p lang persian` (all setups), or
once per language and setup, as `hyperllama reproduce` does: `... -p lang persian -y "setups: [2x]"`.
`-p lang each` trains every target language of the run, one after another, in one kernel (the grid's
`cpt_jobs: per_setup`, used at `smoke` and `tiny`, where importing torch costs more than a tiny model's training).
With `-p models_from hub` the authors' adapted models are fetched from the Hub instead
(`liu-nlp/hyperllama-{180m|572m}-{language}-{1x|1x-cloned|2x}`; `released_repo_pattern`, `released_repos`),
with the training steps, tokens and FLOPs of the paper's recipe, and there are no training curves. For the
572M setups the notebook also fetches the `-matching-1x` checkpoint where the authors released one. Nothing
public says what it matches; we read it as the checkpoint whose training FLOPs equal those of the final 1x
model (the step `steps x params(1x) / params(572M)`), and 06_analysis uses it as the FLOP-matched point."""),
("code", '# Parameters (papermill -p overrides these and any key of params/<scale>.yaml)\nscale = "tiny"  # smoke | tiny | small | small_t4 | paper | released\nlang = "estonian"  # estonian | faroese | icelandic | persian | swedish | multilingual | each (or ISO codes)\n# setups: as in the YAML unless given; the grid runner trains one per job: -y "setups: [2x]"', "parameters"),
("code", SETUP.replace("{steps}", "cpt")),
("code", """runs = cpt.run(P)
runs"""),
("md", """Training FLOPs follow the 6 x parameters x tokens convention (`flops_total` counts all parameters,
the tied embedding once; the training logs also hold the non-embedding variant). The curves below are the
held-out bits per byte at every checkpoint: lower is better."""),
("code", """curves = cpt.curves(P)
if curves.empty:  # models_from: hub
    display(Markdown("No training curves: the models were fetched, not trained."))
else:
    display(curves[curves.trained_on.isin(runs.lang.unique())].pivot_table(index=["trained_on", "setup", "step", "tokens"],
                                                                           columns="lang", values="bpb"))"""),
("md", """**A look inside.** The learning rate at every step of this job's training (warm-up, constant, linear decay to
0 over the last `decay_fraction`) and the held-out bits per byte at every checkpoint:"""),
("code", """from hyperllama_lib.pipeline import inside
inside.show(inside.lr_schedule(P), inside.bpb_curves(P, curves))"""),
],
"04_merge": [
("md", """# 04 · Merge the language models

**Paper step.** For each setup, the five language models are merged into one multilingual model with
mergekit's methods (the paper: linear, multislerp, task arithmetic, TIES, DARE-TIES; weight 1.0 per model,
density 0.5, normalize true). Task vectors are taken against the setup's English base: 1x against the 1x
base, 1x_cloned against the cloned 1x base, 2x against the 2x base. Our merges equal mergekit 0.1.5's
tensor for tensor (`tests/test_mergekit_agreement.py`); every merged folder holds the
`mergekit_config.yml` that reproduces it with mergekit. `merge_subsets: all` merges every subset of at
least two languages, the paper's 26 per setup and method; the default is the five-language merge.

**Beyond the paper.** The paper calls for merging "specialized for language-level integration". Two
methods weight each parameter by how much each language needs it, measured by the diagonal Fisher
information of each model on its own training text (exact per-window squared gradients of the LM loss,
`fisher_tokens` tokens per model, scaled to mean 1 per model):
- `fisher`: Fisher-weighted averaging (Matena & Raffel 2022), sum_i F_i theta_i / sum_i F_i;
- `fisher_ties` (ours): TIES, but an entry of a task vector is kept when its *saliency* F_i d_i^2, the
  second-order estimate of how much language i's loss rises if the entry is reset to the base, is in the
  top `merge_density` share, and the entries that agree with the elected sign are averaged with Fisher
  weights. Where a language barely uses a parameter, its change there does not outvote a language that
  does. With equal Fisher everywhere it is exactly TIES.

05_eval evaluates every merge beside the paper's methods; 06_analysis compares them with the jointly
trained multilingual model.

**LoRA setups.** Their folded models merge with every method above against their base, i.e. on the
adapters' dense weight deltas. `peft_cat` and `peft_svd` use peft's own `add_weighted_adapter` on the
adapters instead: `cat` is the exact weighted sum of the deltas (with normalize, our linear merge), `svd`
that sum truncated by SVD. peft's ties and DARE variants are not offered: they merge the factors A and B
separately, which depends on how each delta happens to be factorised.

**Which base?** `merge_base: setup` (the default) takes task vectors against the model each setup adapted,
as described above. The authors' own mergekit files do otherwise (`merge_base: authors`): every 1x_cloned
merge, every 2x task-arithmetic merge and 25 of the 26 2x TIES and DARE-TIES merges name the trained 572M
English base (`HyperLlama-572M-english-1x-cloned`) as `base_model`; only the five-language 2x TIES and
DARE-TIES merges name `HyperLlama-572M-english-2x` (fetched in hub runs; a trained run has no such model and
uses the 2x base). For 2x the two choices coincide. For 1x_cloned they differ: the 1x_cloned models never saw
the 572M base's English training, so against it their task vectors also carry the difference between the
clone and the trained 572M English model. The files do not say why; a single 572M base for all 572M merges
may simply have been convenient. Linear averaging ignores the base, and normalized task arithmetic
cancels it, so those merges are the same either way; multislerp, TIES, DARE-TIES and Fisher-TIES are not. To run one of the
authors' files as it is: `hyperllama merge --config FILE.yml --out DIR`."""),
PARAMS,
("code", SETUP.replace("{steps}", "merge")),
("code", """merges = merge.run(P)
merges"""),
("md", """**A look inside.** TIES by hand on one tensor of the merge of every language: each language's task vector
trimmed to its largest `merge_density` share, the sign of their sum elected per entry, and the mean of the
entries that agree with it; the share of kept entries that the election overrules, and the result against the
saved merged tensor."""),
("code", """from hyperllama_lib.pipeline import inside
inside.show(inside.ties_by_hand(P))"""),
("md", """Each merged folder records what was merged how (`merge.json`) and, for mergekit's methods, the
mergekit configuration that reproduces it (`mergekit-yaml mergekit_config.yml OUT`). With
`merge_store: recipe` (the `released` scale: the paper's 546 merged models would take about 480 GB) a
folder holds only `recipe.json`, and 05_eval builds each merged model while it scores it:"""),
("code", """example = layout.of(P).merged_model(P.setups[0], P.merge_methods[0])
for name in ("merge.json", "mergekit_config.yml", "recipe.json"):  # recipe.json alone: merge_store recipe
    if (example / name).exists():
        print(f"--- {name}")
        print((example / name).read_text())"""),
],
"05_eval": [
("md", """# 05 · Evaluate every model

**Paper step.** English grammar is measured on BLiMP minimal pairs (the paper used a filtered BLiMP,
`liu-nlp/blimp-single-error`; offline we use the full BLiMP, subsampled per paradigm at small scales):
a pair is correct when the summed log-probability of the good sentence, conditioned on BOS, exceeds that of
the bad one. Language modelling is measured as **bits per byte** on held-out text of every language, a
normalisation independent of the tokenizer, so 1x and 2x models compare fairly; the UDHR gives a second,
parallel held-out text. Every checkpoint saved during continued pretraining is scored on BLiMP and
MultiBLiMP too, so the analysis can draw accuracy against target tokens and training FLOPs; bits per byte
along the way come from training itself, which measured the same held-out split every
`train_eval_every_tokens`. Results are tidy
rows (model, setup, trained_on, step, tokens, flops, final, benchmark, lang, metric, value); a model or
checkpoint already evaluated with the same settings is not evaluated again.

Besides the paper's summed log-probability (`accuracy`), BLiMP is also scored with the token-mean
(`accuracy_token_mean`) and byte-normalised (`accuracy_byte_norm`) log-probability.

**Target-language grammar** is the paper's MultiBLiMP 1.0 (subject-verb and subject-participle agreement
pairs), scored the same way, for every language of a model (checkpoints: the languages they are trained
on). The pairs are the released MultiBLiMP files when `multiblimp_dir` points to them (or, with
`eval_source: hub`, the Hub's), and otherwise the pairs 01_data built from the held-out UD treebanks; the `source` column of
every MultiBLiMP row says which (`released` or `built`). Metrics: `accuracy` and `accuracy:<phenomenon>`,
on `multiblimp_pairs_per_phenomenon` pairs per language and phenomenon.

**The paper's own sets** come from the Hub with `eval_source: hub` (the paper scale sets it):
`blimp-single-error` (the filtered BLiMP, English) and `mpararel` (`liu-nlp/minimal_pair_mpararel`, factual
knowledge as minimal pairs, in the languages of a model that it has; checkpoints: the languages they are
trained on), scored the same way, with BLiMP's metrics plus `accuracy:<paradigm>` (mParaRel: per relation),
source `released`, and MultiBLiMP's released files from the Hub. Their layouts could not be checked offline:
the loaders accept the plausible ones and stop with one line naming the file and its columns otherwise.
With `eval_source: local` nothing is fetched and these two sets give no rows.

By default every model of the run is evaluated. `eval_models` picks one group (`base`, `merged`, or a
language / `multilingual`: that CPT model with its checkpoints) and `setups` one setup, which is how
`hyperllama reproduce` splits evaluation into jobs that start as soon as their model exists."""),
("code", '# Parameters (papermill -p overrides these and any key of params/<scale>.yaml)\nscale = "tiny"  # smoke | tiny | small | small_t4 | paper | released\neval_models = None  # None: all | base | merged | a language or multilingual', "parameters"),
("code", SETUP.replace("{steps}", "evaluate")),
("code", """results = evaluate.run(P)
finals = results[results["final"] & results.metric.isin(["accuracy", "bpb"])]
finals.pivot_table(index=["setup", "kind", "trained_on"], columns=["benchmark", "lang"], values="value").round(3)"""),
("md", """**A look inside.** One BLiMP and one MultiBLiMP pair scored token by token by the 1x and 2x English bases:
log p of each token given BOS and the tokens before it; a pair counts as correct when the good sentence's `SUM`
is higher. The shared beginning scores the same in both sentences; the difference comes from where they part."""),
("code", """from hyperllama_lib.pipeline import inside
examples = inside.example_pairs(P)
for what, (good, bad) in examples.items():
    inside.show(f"**{what}**", inside.pair_token_by_token(P, good, bad))
if not examples:
    inside.show("No local BLiMP or MultiBLiMP file in this run to show.")"""),
("md", """MultiBLiMP accuracy of the final models per language and phenomenon, with the source of the pairs:"""),
("code", """mb = results[results["final"] & (results.benchmark == "multiblimp")]
display(Markdown("MultiBLiMP source: " + ", ".join(f"{lang}: {src}" for lang, src in
                                                  mb.groupby("lang").source.first().items())))
mb.pivot_table(index=["setup", "kind", "trained_on"], columns=["lang", "metric"], values="value").round(3)"""),
("md", """English BLiMP accuracy at every checkpoint of the monolingual runs (step 0 is the English base):"""),
("code", """blimp = results[(results.benchmark == "blimp") & (results.metric == "accuracy") & (results.kind == "cpt")]
blimp.pivot_table(index=["trained_on", "step"], columns="setup", values="value").round(3)"""),
],
"06_analysis": [
("md", """# 06 · Analysis: the paper's comparisons and claims

The paper asks whether width-upscaling an English base before adaptation (`2x`: CPT of the 572M-style base;
`1x_cloned`: the small base HyperCloned x2, then CPT) is more data-efficient than continued pretraining of the
small model (`1x`), whether it forgets less English, how merges of the language-specific models compare with a
jointly trained multilingual model, and how much merge methods differ.

This notebook first **collects** the run's rows (evaluation results, training curves, data statistics, run
info) into `tables/` (`results_tidy.csv`, `curves.csv`, `data_stats.csv`, `run_info.csv`), then **renders**
every figure (PNG + PDF in `figures/`), every table (CSV + Markdown + LaTeX in `tables/`) and `REPORT.md` from
those rows alone. The committed outputs can therefore be re-rendered without the run:
`analysis.render(analysis.load_rows("tables"), ".")` (tests/test_analysis.py checks they match).

A run whose models were fetched from the Hub (`models_from: hub`) has no training curves and no intermediate
checkpoints: it gets every table and figure that needs neither, compares the 1x final models with the authors'
`-matching-1x` checkpoints instead of reading the curves at equal FLOPs, and `REPORT.md` says in one sentence
each what is left out."""),
PARAMS,
("code", SETUP.replace("{steps}", "analysis")),
("code", """import pandas as pd
from IPython.display import Image

out = analysis.run(P)
T, F = out["tables"], out["figures"]


def figure(*names):
    for name in names:
        if name in F:
            display(Image(str(F[name])))


print(f"{len(T)} tables, {len(F)} figures; report: {out['report']}")"""),
("md", """## 1. Data and budgets
**Paper step.** Per-language FineWeb-2 data, the UniMax allocation of a character budget (as even as possible,
each language capped at 6 epochs of its data; the paper: Swedish and Persian 1 epoch, Estonian 4.45, Icelandic
and Faroese 6) and the English/code replay share (1.7-6.7% of samples in the paper)."""),
("code", """figure("data_budget")
T["data_budget"]"""),
("md", """## 2. Data efficiency
**Paper step / claim 1.** Target-language held-out bits per byte (tokenizer-independent, lower is better) and
MultiBLiMP agreement accuracy against the target-language tokens seen, 1x vs 1x_cloned vs 2x, one panel per
language. All setups of a language see identical data, so the final models compare at equal data; the table
also gives the share of the data after which an upscaled curve first reaches the 1x final bits per byte."""),
("code", """figure("bpb_vs_target_tokens", "multiblimp_vs_target_tokens")
display(T["heldout_bpb_final"])
T.get("data_efficiency", Markdown("No training curves (models fetched from the Hub): no `data_efficiency`."))"""),
("md", """MultiBLiMP accuracy of every final model on every language's pairs (the column names say whether the
pairs are the released MultiBLiMP 1.0 or were built from held-out UD treebanks by 01_data):"""),
("code", """T.get("multiblimp")"""),
("md", """Every other pair benchmark the run scored (e.g. the paper's `blimp-single-error` and `mpararel`), one table
each (`pairs_<benchmark>`):"""),
("code", """for name in [n for n in T if n.startswith("pairs_")]:
    display(Markdown(f"`{name}`"), T[name])"""),
("md", """## 3. Compute
**Paper step.** The same curves against the training FLOPs of the adaptation stage, 6 x N x tokens with N = all
parameters or non-embedding parameters (a 2x token costs about 3.2x to 4x a 1x token). The table is the paper's
approximately FLOP-matched comparison: at the 1x final model's FLOPs, the 1x_cloned and 2x runs' tokens, bits per
byte (training curve) and MultiBLiMP (checkpoints), interpolated linearly between the points around it.
Without curves (models fetched from the Hub) the authors' `-matching-1x` checkpoints stand in, read as the 572M
checkpoints at the 1x final model's training FLOPs (an inference from their name): `flop_matched_released`."""),
("code", """figure("bpb_vs_training_flops", "multiblimp_vs_training_flops")
T.get("flop_matched", T.get("flop_matched_released"))"""),
("md", """## 4. English forgetting
**Paper step / claim 2.** English BLiMP accuracy and English held-out bits per byte of every adapted model minus
its setup's English base (BLiMP change < 0 and bits-per-byte change > 0 mean forgetting), then the same along
training."""),
("code", """figure("english_forgetting", "english_blimp_before_after", "english_bpb_during_cpt", "english_blimp_during_cpt")
display(T["forgetting"])
T["english_blimp"]"""),
("md", """## 5. Merging
**Paper step / claims 3 and 4.** The five monolingual models of each setup merged by every method of the run
(task vectors against the setup's English base): methods x setups per target language, the best merge against
the jointly trained multilingual model and the monolingual models, and mean MultiBLiMP."""),
("code", """figure("merge_methods", "merged_vs_multilingual")
display(T["merge_summary"])
display(T["merge_methods"])
display(T["merging"])
T.get("merge_multiblimp")"""),
("md", """Merge quality against the number of languages merged (the paper's 26 subsets of the five languages); only when
the run merged every subset (`--set merge_subsets=all`)."""),
("code", """figure("merge_subset_size")
T.get("merge_subsets", Markdown("Subset merges were not run at this scale: `--set merge_subsets=all`."))"""),
("md", """## 6. Findings check
Each of the paper's four claims next to what this run shows, with a verdict that follows from the tables by
stated rules (`hyperllama_lib/pipeline/report.py`): bits-per-byte differences within 0.01 count as equal, accuracy
differences within 2 binomial standard errors (pairs in `pair_counts`) as equal. `REPORT.md` has every figure
and table with a sentence of interpretation."""),
("code", """with pd.option_context("display.max_colwidth", None):
    display(T["findings"])"""),
],
}


def write(out: Path = OUT) -> list[Path]:
    """Write every notebook into `out`; tests/test_notebooks.py compares them with the committed ones."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, cells in books.items():
        written.append(out / f"{name}.ipynb")
        nbf.write(nb(name, cells), written[-1])
    return written


if __name__ == "__main__":
    write()
    print(f"wrote {len(books)} notebooks to {OUT}")
