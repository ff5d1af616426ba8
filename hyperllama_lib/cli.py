"""The `hyperllama` command: reproduce the paper at a scale (and show its status or plan), HyperClone a model folder, merge model
folders, score minimal pairs with a model folder, or build agreement pairs from UD treebanks."""
from __future__ import annotations

import argparse
import errno
import json
import shutil
import sys
import time
from pathlib import Path

import yaml

from .artifacts import atomic
from .errors import HyperllamaError, MergeError, ModelFolderError, PairsFormatError, ParamError
from .evaluation.pair_sources import PAIR_FORMATS
from .merging.engine import DTYPES, METHODS
from .params import SCALES, load_params

# OS errors that a user causes: a missing input, an existing or unwritable output, a full disk
USER_OS_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _yaml_value(option: str, pair: str, error: type[HyperllamaError] = ParamError) -> tuple[str, object]:
    if "=" not in pair:
        raise error(f"{option} expects KEY=VALUE, got {pair!r}")
    key, value = pair.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise error(f"{option} {pair!r}: the value is not YAML ({getattr(e, 'problem', None) or e})") from None


def _overrides(pairs: list[str]) -> dict:
    return dict(_yaml_value("--set", pair) for pair in pairs)


def _grid_params(args):
    """Params of a grid command and the overrides every notebook gets (validated before any work)."""
    overrides = _overrides(args.set)
    if args.langs:
        overrides["langs"] = [s.strip() for s in args.langs.split(",")]
    if args.run_dir:
        overrides["run_dir"] = str(Path(args.run_dir).resolve())
    return load_params(args.scale, overrides, need_data=args.command == "reproduce"), overrides


def cmd_lab(args) -> int:
    import subprocess

    from . import jupyter_kernel
    from .params import REPO_ROOT

    command = jupyter_kernel.lab_command(REPO_ROOT / "notebooks", args.jupyter_args)
    print(f"[lab] kernel {jupyter_kernel.KERNEL_NAME!r} ({sys.executable}) in {jupyter_kernel.register()}", flush=True)
    # JupyterLab runs in the foreground until Ctrl-C; its exit status is ours
    return subprocess.run(command, env=jupyter_kernel.environment()).returncode


def cmd_reproduce(args) -> int:
    from .pipeline import layout, runner

    p, overrides = _grid_params(args)
    started = time.time()
    code = runner.Runner(p, overrides, parallel=args.jobs, only=args.only).run()
    if code == 0:
        print(f"[reproduce] scale {p.scale} finished in {time.time() - started:.0f}s; figures in "
              f"{p.publish_path / 'figures'}, tables in {p.publish_path / 'tables'}, report "
              f"{p.publish_path / 'REPORT.md'}, executed notebooks in {layout.of(p).notebooks}")
    return code


def cmd_status(args) -> int:
    from tabulate import tabulate

    from .pipeline import runner

    p, overrides = _grid_params(args)
    rows = runner.job_table(p, overrides, args.only)
    print(tabulate(rows, headers="keys", tablefmt="simple", missingval=""))
    states = [r["state"] for r in rows]
    print(f"\n{states.count('done')} of {len(rows)} steps done" +
          "".join(f", {states.count(s)} {s}" for s in ("running", "failed", "interrupted", "stale", "pending")
                  if states.count(s)) + f" (run dir {p.run_path})")
    return 0


def cmd_plan(args) -> int:
    from .pipeline import runner

    p, overrides = _grid_params(args)
    print("\n".join(runner.plan_commands(p, overrides, args.only)))
    return 0


def _size(n: int | None) -> str:
    return "size unknown" if n is None else f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def cmd_released(args) -> int:
    """The released repositories a run of these parameters fetches, with their sizes: nothing is downloaded."""
    from .models import released

    p, _ = _grid_params(args)
    p.models_from = "hub"  # what a hub run of these parameters would fetch, whatever the YAML says
    repos = released.releases(p)
    sizes = [released.download_size(r.repo, r.revision) for r in repos]
    width = max(len(r.spec) for r in repos)
    for r, size in zip(repos, sizes):
        what = f"{r.kind} {r.setup}" + ("" if r.lang in ("eng", "multilingual") else f" {r.lang}")
        note = " (fetched where released)" if r.optional else ""
        print(f"{r.spec:<{width}}  {_size(size):>12}  {what}{note}")
    known = [s for s in sizes if s is not None]
    sizes_said = f"{_size(sum(known))} in the {len(known)} whose size the Hub gave" if known else "no sizes"
    print(f"{len(repos)} repositories ({sum(r.optional for r in repos)} optional); {sizes_said}"
          + ("" if len(known) == len(repos) else f"; {len(repos) - len(known)} unknown (Hub not reachable or no "
             "such repo)") + ". Nothing was downloaded; 02_upscale and 03_cpt download them with progress bars.")
    return 0


def _step_params(args, **options):
    """Params of a single training step (upscale, cpt) from --scale, --set and the step's own options."""
    overrides = {**_overrides(args.set), **options}
    if args.run_dir:
        overrides["run_dir"] = str(Path(args.run_dir).resolve())
    return load_params(args.scale, overrides)


def _run_step(p, work) -> int:
    """Run a step in this process, or as one of the processes torchrun started (rank 0 prints)."""
    from .training import distributed

    distributed.init(p.device)
    table = work(print if distributed.is_main() else (lambda message: None))
    if distributed.is_main():
        print(table.to_string(index=False))
    distributed.finish()
    return 0


def cmd_upscale(args) -> int:
    from .pipeline import upscale

    p = _step_params(args)
    return _run_step(p, lambda log: upscale.run(p, log=log))


def cmd_cpt(args) -> int:
    from .pipeline import cpt

    options = {"lang": args.lang, **({"setups": args.setups.split(",")} if args.setups else {})}
    p = _step_params(args, **options)
    return _run_step(p, lambda log: cpt.run(p, p.lang, p.setups, log=log))


def cmd_clone(args) -> int:
    from .models import cloning

    dst = cloning.clone_folder(args.src, args.dst, factor=args.factor, ffn_factor=args.ffn_factor,
                               noise_std=args.noise_std, seed=args.seed, overwrite=args.overwrite)
    info = json.loads((Path(dst) / "hyperclone.json").read_text())
    print(f"cloned {args.src} x{args.factor} -> {dst}: {info['parameters_before']['total']:,} -> "
          f"{info['parameters_after']['total']:,} parameters")
    if not args.no_verify:
        diff = cloning.max_logit_difference(args.src, dst)
        print(f"function preserved: max |logit difference| to the source = {diff:.2e} (fp32)")
    return 0


def cmd_export_llama(args) -> int:
    from .models import modeling

    model = modeling.export_llama(modeling.load_model(args.src), mode=args.mode)
    with atomic.replace_dir(Path(args.dst)) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if (Path(args.src) / name).is_file():
                shutil.copy2(Path(args.src) / name, tmp / name)
    print(f"exported {args.src} -> {args.dst} as a plain LlamaForCausalLM ({args.mode})")
    return 0


# merge options that a mergekit configuration replaces (--config takes them from the file)
_MERGE_OPTIONS_OF_A_CONFIG = {"models": "MODEL_DIR", "method": "--method", "base": "--base", "weight": "--weight",
                              "density": "--density", "normalize": "--normalize/--no-normalize",
                              "param": "--param", "dtype": "--dtype", "importance": "--importance"}


def _merge_config(args) -> int:
    from .merging import mergekit_config

    given = [flag for key, flag in _MERGE_OPTIONS_OF_A_CONFIG.items() if getattr(args, key) not in (None, [])]
    if given:
        raise MergeError(f"--config takes the models, method, parameters and dtype from the file; drop "
                         f"{', '.join(given)}")
    out, plan = mergekit_config.run(args.config, args.out, mergekit_config.parse_maps(args.map), seed=args.seed,
                                    overwrite=args.overwrite, progress=sys.stderr.isatty())
    unused = (f"; accepted without effect, as in mergekit: {', '.join(plan.accepted_without_effect)}"
              if plan.accepted_without_effect else "")
    return _merged(args, out, len(plan.models), plan.method, f" from {args.config}{unused}")


def _merged(args, out: Path, n: int, method: str, more: str = "") -> int:
    """Print what a merge did (from its merge.json); also write its mergekit config if asked."""
    manifest = json.loads((out / "merge.json").read_text())
    settings = ", ".join(f"{k}={v}" for k, v in manifest["parameters"].items())
    print(f"merged {n} models with {method} ({settings}; weights {manifest['weights']}) -> {out} "
          f"({manifest['dtype']}){more}")
    if args.mergekit_yaml:
        atomic.write_text(Path(args.mergekit_yaml), (out / "mergekit_config.yml").read_text())
        print(f"wrote the mergekit config to {args.mergekit_yaml}")
    return 0


def cmd_merge(args) -> int:
    from . import merging

    if args.config:
        return _merge_config(args)
    if args.map:
        raise MergeError("--map names models of a --config file; without --config give model folders")
    if not args.models or not args.method:
        raise MergeError("give the model folders and --method (or a mergekit configuration with --config FILE)")
    dtype = args.dtype or "float32"
    method = merging.get_method(args.method)
    n = len(args.models)
    weights = args.weight
    if weights is not None and len(weights) == 1:
        weights = weights * n
    elif weights is not None and len(weights) != n:
        raise MergeError(f"--weight takes one value for all models or one per model; got {len(weights)} "
                         f"for {n} models")
    params = dict(_yaml_value("--param", pair, MergeError) for pair in args.param)
    params.update({k: getattr(args, k) for k in ("density", "normalize", "seed") if getattr(args, k) is not None})
    for key in params:
        if key not in method.parameters:
            raise MergeError(f"merge method {method.name} takes no {key}; its parameters: "
                             f"{', '.join(method.parameters) or 'none'}")
    if args.mergekit_yaml and method.mergekit_name is None:
        raise MergeError(f"merge method {method.name} has no mergekit equivalent (--mergekit-yaml)")
    out = merging.merge_models(method.name, args.models, args.out, base_dir=args.base, weights=weights,
                               importances=args.importance, dtype=dtype, overwrite=args.overwrite,
                               progress=sys.stderr.isatty(), **params)
    return _merged(args, out, n, method.name)


def cmd_fisher(args) -> int:
    from .merging import fisher_information

    n = fisher_information.estimate_to_file(args.model_dir, args.tokens, args.out, args.seq_len, args.n_tokens,
                                            normalize_mean=not args.no_normalize, progress=sys.stderr.isatty())
    print(f"diagonal Fisher of {args.model_dir} on {n} windows of {args.seq_len} tokens "
          f"from {args.tokens} -> {args.out}")
    return 0


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def _batch_size(value: str) -> int | str:
    return value if value == "auto" else _positive_int(value)


def _load_scorer(model_dir: str, device):
    """Model and tokenizer of a model folder, checked to fit each other."""
    from .corpus import tokenizer
    from .models import modeling

    model = modeling.load_model(model_dir, device=device)
    try:
        tok = tokenizer.load_tokenizer(model_dir)
    except (OSError, ValueError) as e:
        raise ModelFolderError(f"{model_dir}: no usable tokenizer ({str(e).splitlines()[0]})") from None
    if tok.bos_token_id is None:
        raise ModelFolderError(f"{model_dir}: the tokenizer has no BOS token; scoring conditions on BOS")
    if len(tok) > model.config.vocab_size:
        raise ModelFolderError(f"{model_dir}: the tokenizer has {len(tok)} ids, the model only "
                               f"{model.config.vocab_size}")
    return model, tok


def _print_summary(summary: dict) -> None:
    print(f"accuracy {summary['accuracy']:.4f} (summed log-probability, the paper's metric) on "
          f"{summary['n_pairs']} pairs; token-mean {summary['accuracy_token_mean']:.4f}, "
          f"byte-normalised {summary['accuracy_byte_norm']:.4f}")
    for column, table in summary["breakdowns"].items():
        if len(table) > 12:
            continue  # long tables (67 BLiMP paradigms) are left to --out
        cells = ", ".join(f"{value} {row['accuracy']:.3f} ({row['n_pairs']})" for value, row in table.items())
        print(f"  by {column}: {cells}")


def cmd_score_pairs(args) -> int:
    from . import evaluation
    from .device import resolve as resolve_placement
    from .evaluation import pair_sources

    pairs = pair_sources.load_pairs_file(args.pairs_file, args.format)  # a bad file fails before the model loads
    if args.max_pairs and args.max_pairs < len(pairs):
        pairs = pairs.sample(n=args.max_pairs, random_state=0).sort_index()
    if pairs.empty:
        raise PairsFormatError(f"{args.pairs_file}: no pairs")
    device = resolve_placement(args.device, args.dtype).device
    model, tok = _load_scorer(args.model_dir, device)
    scored, summary = evaluation.score_pairs(model, tok, pairs, batch_size=args.batch_size, device=device,
                                             progress=sys.stderr.isatty(), dtype=args.dtype,
                                             memory_budget_gb=args.memory_budget_gb)
    _print_summary(summary)
    if args.out:
        result = {"model_dir": str(args.model_dir), "pairs_file": str(args.pairs_file),
                  "format": args.format or pair_sources.detect_pairs_format(args.pairs_file),
                  **summary, "pairs": json.loads(scored.to_json(orient="records", force_ascii=False))}
        atomic.write_text(Path(args.out), json.dumps(result, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {args.out}")
    return 0


def cmd_build_pairs(args) -> int:
    from .evaluation import ud_pairs

    built = ud_pairs.build_pairs(args.conllu, args.lang, unimorph=args.unimorph, lexicon_files=args.lexicon,
                                 seed=args.seed, max_share=args.max_share)
    ud_pairs.write_data_tsv(built.pairs, Path(args.out))
    found = ud_pairs.counts(built.pairs)
    print(f"{found['total']} pairs from {built.sentences} sentences -> {args.out}")
    for phenomenon in ud_pairs.PHENOMENA:
        print(f"  {phenomenon}: {found[phenomenon]} (before balancing {built.before_balance.get(phenomenon, 0)})")
    return 0


def _share(value: str) -> float:
    try:
        share = float(value)
    except ValueError:
        share = -1.0
    if not 0 < share <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {value!r}")
    return share


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hyperllama", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    lab = sub.add_parser("lab", help="open JupyterLab on notebooks/ with this environment's kernel",
                         description="Register the notebooks' kernel `hyperllama` inside this environment (if "
                         "needed) and start JupyterLab on notebooks/. Arguments after the command go to "
                         "JupyterLab, e.g. `hyperllama lab --no-browser --port 8899`.")
    lab.set_defaults(func=cmd_lab)

    rep = sub.add_parser("reproduce", help="run the whole grid of notebooks with papermill at one scale",
                         description="Run notebooks 01-06 with papermill in dependency order: data and upscaling "
                         "once, CPT per setup and language (and the multilingual model per setup), merges per "
                         "setup, evaluation per model group, analysis. Finished jobs (parameters unchanged, "
                         "outputs verified) are skipped; after a failure the jobs that do not need it still run. "
                         "Executed notebooks, their HTML and logs are kept in <run_dir>/notebooks/.")
    st = sub.add_parser("status", help="the grid of a scale as a table: step, parameters, state, duration",
                        description="Show every job of the grid with its state (done, pending, running, failed, "
                        "interrupted, stale: parameters or inputs changed since it ran), without running anything.")
    pl = sub.add_parser("plan", help="print the papermill commands of the grid in dependency order",
                        description="Print one papermill command per line, in dependency order, to run from the "
                        "repository root (e.g. to hand to a cluster scheduler).")
    for p_ in (rep, st, pl):
        p_.add_argument("--scale", default="tiny", choices=SCALES, help="parameter file params/<scale>.yaml")
        p_.add_argument("--langs", help="comma-separated target languages (codes or names); default: all five")
        p_.add_argument("--run-dir", help="where artifacts go (default runs/<scale>, or $HYPERLLAMA_RUNS/<scale>)")
        p_.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any parameter of the YAML (repeatable), e.g. --set lr=0.001")
        p_.add_argument("--only", action="append", metavar="GLOB",
                        help="only the steps matching this pattern (repeatable), e.g. 'cpt/2x/*', with the steps "
                        "they need")
    rel = sub.add_parser("released", help="list the authors' released models a hub run would fetch, with sizes",
                         description="Print every Hub repository that `models_from: hub` fetches for these "
                         "parameters (English bases, adapted and multilingual models, -matching-1x checkpoints) "
                         "with its download size where the Hub says it. Downloads nothing.")
    rel.add_argument("--scale", default="released", choices=SCALES, help="parameter file params/<scale>.yaml")
    rel.add_argument("--langs", help="comma-separated target languages (codes or names); default: all five")
    rel.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override any parameter of the YAML (repeatable), e.g. --set merge_base=authors")
    rel.set_defaults(func=cmd_released, run_dir=None)
    rep.add_argument("--jobs", type=_positive_int, default=1, metavar="N",
                     help="independent jobs to run at once (default 1); each gets cores/N threads")
    rep.set_defaults(func=cmd_reproduce)
    st.set_defaults(func=cmd_status)
    pl.set_defaults(func=cmd_plan)

    up = sub.add_parser("upscale", help="02_upscale without a notebook: the English seed and bases (torchrun-able)",
                        description="Train the English seed, HyperClone it and train the 1x and 2x bases (02_upscale), "
                        "skipping finished parts. Runs in one process, or data-parallel under torchrun (DDP, or FSDP "
                        "with --set distributed=fsdp); needs 01_data's outputs in the run directory.")
    cp = sub.add_parser("cpt", help="03_cpt without a notebook: continued pretraining on one language (torchrun-able)",
                        description="Continue pretraining each setup's English base on one target language, or on all "
                        "five (--lang multilingual), skipping finished setups (03_cpt). Runs in one process, or "
                        "data-parallel under torchrun; needs 02_upscale's outputs in the run directory.")
    for p_ in (up, cp):
        p_.add_argument("--scale", default="tiny", choices=SCALES, help="parameter file params/<scale>.yaml")
        p_.add_argument("--run-dir", help="where artifacts go (default runs/<scale>, or $HYPERLLAMA_RUNS/<scale>)")
        p_.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any parameter of the YAML (repeatable), e.g. --set precision=fp16")
    cp.add_argument("--lang", required=True,
                    help="target language (code or name), multilingual, or each (every target language)")
    cp.add_argument("--setups", help="comma-separated setups (1x, 1x_cloned, 2x, 1x_lora, 2x_lora, 1x_cloned_lora); "
                                     "default: the scale's")
    up.set_defaults(func=cmd_upscale)
    cp.set_defaults(func=cmd_cpt)

    cl = sub.add_parser("clone", help="HyperClone a Llama-architecture model folder (function preserving)",
                        description="Width-upscale a saved Llama or HyperLlama model folder by FACTOR with "
                        "symmetric HyperCloning: every hidden vector x becomes [x, ..., x]; the clone's logits "
                        "equal the source's. Tied embeddings stay tied (the head divides by the factor, "
                        "model_type hyperllama).")
    cl.add_argument("src", help="source model folder (save_pretrained, safetensors)")
    cl.add_argument("dst", help="destination folder (must not exist unless --overwrite)")
    cl.add_argument("--factor", type=int, default=2, help="width multiplier for hidden size and heads (default 2)")
    cl.add_argument("--ffn-factor", type=int, default=None, help="FFN intermediate multiplier (default: --factor)")
    cl.add_argument("--noise-std", type=float, default=0.0,
                    help="symmetry-breaking noise that cancels across copies (still function preserving)")
    cl.add_argument("--seed", type=int, default=0, help="seed for the noise")
    cl.add_argument("--overwrite", action="store_true", help="replace an existing destination")
    cl.add_argument("--no-verify", action="store_true", help="skip comparing the clone's logits with the source's")
    cl.set_defaults(func=cmd_clone)

    ex = sub.add_parser("export-llama", help="save a hyperllama model as a plain LlamaForCausalLM",
                        description="Write a model folder that any Llama tool reads (no custom model type), with "
                        "the same logits: fold_norm keeps the tied embedding and divides the final norm by the "
                        "head factor; untie stores a separate head E / factor.")
    ex.add_argument("src", help="hyperllama (or llama) model folder")
    ex.add_argument("dst", help="destination folder")
    ex.add_argument("--mode", choices=["fold_norm", "untie"], default="fold_norm")
    ex.set_defaults(func=cmd_export_llama)

    me = sub.add_parser("merge", help=f"merge model folders ({', '.join(METHODS)}), or run a mergekit config",
                        description="Merge save_pretrained model folders with mergekit 0.1.5 semantics, tensor by "
                        "tensor. Task vectors are taken against --base. Defaults are the paper's: weight 1.0 per "
                        "model, density 0.5, normalize true. The output folder is loadable as a model (config and "
                        "tokenizer from the base, else the first model) and holds merge.json (what was merged how) "
                        "and mergekit_config.yml (the same merge for mergekit-yaml). Or run a mergekit 0.1.5 "
                        "configuration as it is: --config FILE.yml --out DIR (models, base_model, per-model weight "
                        "and density, normalize, dtype and merge_method from the file, mergekit's defaults for the "
                        "rest; a key we cannot honour stops with one line). Its models are folders (absolute, or "
                        "relative to the file's folder, then to the working directory), --map entries, or Hub ids "
                        "(fetched: config, safetensors and tokenizer files only).")
    me.add_argument("models", nargs="*", metavar="MODEL_DIR", help="model folders to merge (not with --config)")
    me.add_argument("--config", metavar="FILE.yml",
                    help="a mergekit configuration to run as it is, instead of MODEL_DIR... and --method")
    me.add_argument("--map", action="append", default=[], metavar="NAME=DIR",
                    help="with --config: use folder DIR for the model the file calls NAME (repeatable)")
    me.add_argument("--method", help=", ".join(
        f"{m.name} ({', '.join(f'{k}={v}' for k, v in m.parameters.items()) or 'no parameters'})"
        for m in METHODS.values()))
    me.add_argument("--base", metavar="DIR", help="base model folder (needed by task-vector methods)")
    me.add_argument("--out", required=True, metavar="DIR", help="output model folder")
    me.add_argument("--weight", type=float, nargs="+", metavar="W",
                    help="one weight for all models or one per model, after the model folders (default 1.0 each)")
    me.add_argument("--density", type=float, help="share of task-vector entries kept, in [0, 1] (default 0.5)")
    me.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                    help="divide by the summed weights (default: true)")
    me.add_argument("--seed", type=int, help="seed of the random drop (dare_*; default 0); with --config, "
                    "mergekit's --random-seed: on CPU mergekit draws the same masks")
    me.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                    help="any other method parameter (repeatable), e.g. --param eps=1e-6 --param rescale=false")
    me.add_argument("--dtype", choices=list(DTYPES), help="output dtype (default float32; math is float32)")
    me.add_argument("--importance", nargs="+", metavar="FILE",
                    help="one diagonal-Fisher safetensors per model, in model order (fisher, fisher_ties; "
                         "made by `hyperllama fisher`)")
    me.add_argument("--mergekit-yaml", metavar="PATH", help="also write the mergekit config to PATH")
    me.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    me.set_defaults(func=cmd_merge)

    fi = sub.add_parser("fisher", help="diagonal Fisher of a model folder on a packed token file "
                                       "(the importances of the fisher and fisher_ties merges)")
    fi.add_argument("model_dir", metavar="MODEL_DIR")
    fi.add_argument("tokens", metavar="TOKENS_BIN", help="a packed token file (01_data's train/<lang>.bin)")
    fi.add_argument("--out", required=True, metavar="FILE", help="output safetensors file")
    fi.add_argument("--n-tokens", type=_positive_int, default=8192, help="tokens to use (default 8192)")
    fi.add_argument("--seq-len", type=_positive_int, default=128, help="window length (default 128)")
    fi.add_argument("--no-normalize", action="store_true", help="keep the raw scale (default: mean 1)")
    fi.set_defaults(func=cmd_fisher)

    sp = sub.add_parser("score-pairs", help="minimal-pair accuracy of a model folder on a BLiMP or MultiBLiMP file",
                        description="Score minimal pairs: a pair is correct when the summed log-probability of the "
                        "good sentence, conditioned on BOS, exceeds the bad one's (the paper's accuracy). Also reports "
                        "the token-mean and byte-normalised variants and breakdowns by paradigm/phenomenon, field and "
                        "language. PAIRS_FILE is a BLiMP jsonl (or a folder of them) or a MultiBLiMP data.tsv, plain "
                        "or gzipped.")
    sp.add_argument("model_dir", metavar="MODEL_DIR",
                    help="model folder (save_pretrained, safetensors) with its tokenizer")
    sp.add_argument("pairs_file", metavar="PAIRS_FILE", help="*.jsonl[.gz] (BLiMP) or *.tsv[.gz] (MultiBLiMP)")
    sp.add_argument("--format", choices=PAIR_FORMATS, help="file format (default: from the file name)")
    sp.add_argument("--out", help="write accuracies, breakdowns and per-pair scores to this JSON file")
    sp.add_argument("--batch-size", type=_batch_size, default="auto", metavar="N|auto",
                    help="sentences per batch; auto (default) fits batches to --memory-budget-gb")
    sp.add_argument("--memory-budget-gb", type=float, default=None,
                    help="activation memory for --batch-size auto (default: 0.0625 on CPU, half the free GPU memory)")
    sp.add_argument("--max-pairs", type=_positive_int, default=None, metavar="N",
                    help="score a fixed random sample (seed 0) of N pairs, kept in file order")
    sp.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    sp.add_argument("--dtype", choices=["auto", "fp32", "bf16"], default="auto",
                    help="auto: bf16 autocast on CUDA, fp32 on CPU (log-softmax always in fp32)")
    sp.set_defaults(func=cmd_score_pairs)

    bp = sub.add_parser("build-pairs", help="build MultiBLiMP-style agreement pairs from UD treebanks",
                        description="Build subject-verb and subject-participle agreement minimal pairs (SV-#, SV-P, "
                        "SV-G, SP-#, SP-P, SP-G) from CoNLL-U files, the way MultiBLiMP 1.0 was built: the verb form "
                        "is swapped for the form with the other number, person or gender, found in UniMorph and in "
                        "the forms the treebanks attest. Writes a MultiBLiMP data.tsv and prints the pairs per "
                        "phenomenon. Use held-out files (test, or dev where there is none). Design choices: "
                        "hyperllama_lib/evaluation/ud_pairs.py.")
    bp.add_argument("conllu", nargs="+", metavar="CONLLU", help="CoNLL-U files (plain or .gz) whose sentences become pairs")
    bp.add_argument("--lang", required=True, help="language: ISO code or name (any code for other treebanks)")
    bp.add_argument("--out", required=True, metavar="FILE", help="the data.tsv to write")
    bp.add_argument("--unimorph", metavar="FILE", help="UniMorph table of the language (TSV lemma, form, tags; .gz ok)")
    bp.add_argument("--lexicon", action="append", default=[], metavar="CONLLU",
                    help="more CoNLL-U files whose verb forms (not sentences) are used (repeatable)")
    bp.add_argument("--seed", type=int, default=0, help="seed of the balancing subsample (default 0)")
    bp.add_argument("--max-share", type=_share, default=0.5, metavar="X",
                    help="largest share of one feature value within a phenomenon (default 0.5; 1: no balancing)")
    bp.set_defaults(func=cmd_build_pairs)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a command; an error the user caused is one line on stderr and exit status 2, a bug keeps its traceback."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "lab":  # only JupyterLab takes arguments of its own
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.jupyter_args = rest
    try:
        return args.func(args)
    except HyperllamaError as e:
        message = e.one_line()
    except OSError as e:
        if not isinstance(e, USER_OS_ERRORS) and e.errno not in DISK_FULL:
            raise
        message = f"{type(e).__name__}: {' '.join(str(e).split())}"
    print(f"hyperllama {args.command}: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
