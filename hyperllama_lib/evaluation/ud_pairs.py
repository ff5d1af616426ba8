"""MultiBLiMP-style agreement minimal pairs built offline from Universal Dependencies and UniMorph.

MultiBLiMP 1.0 (Jumelet et al. 2025) was built automatically from UD treebanks and UniMorph; its files
live on the Hugging Face Hub. This module rebuilds that kind of benchmark from the treebanks we have, so
every language with a UD treebank gets grammar pairs. `build_pairs` reads CoNLL-U files and writes rows
in MultiBLiMP's `data.tsv` format (`write_data_tsv`), which
`pair_sources.load_multiblimp_local` reads.

Design choices: MultiBLiMP's published pipeline (github.com/jumelet/multiblimp: its NsubjFilter, its
UniMorph/UD inflector, its treebank filter) wherever ours differed; docs/multiblimp_pairs.md lists where
we still differ and why.
- Sentences. Dropped, as in MultiBLiMP, when any word has `Typo=Yes`, a `Foreign` or `Style` feature,
  a MISC key containing `Correct`, or the relation `reparandum`, or when it has more than MAX_WORDS (64)
  words. The pair's sentence is the `# text` when the swapped word is its own token there; otherwise
  (a word inside a multi-word token such as "isn't", or tokens that do not spell the text) it is the
  words joined by spaces except after SpaceAfter=No, MultiBLiMP's sentence ("is n't").
- Subjects and agreeing words. A subject is an `nsubj` (or, unlike MultiBLiMP, `nsubj:pass`) dependent
  with UPOS NOUN or PRON whose head is a VERB or AUX (or a participle: Swedish tags them ADJ). SV: the
  agreeing word is the head's first `cop`/`aux*` dependent, else the head, and must be finite
  (`VerbForm=Fin`, or no VerbForm but Person or Mood). SP: the head itself when it is a participle.
  Skipped: a subject with a `conj` dependent; a head with a dependent whose relation contains `expl`,
  `csubj:outer` or `nsubj:outer`. Per language and phenomenon REQUIRED may demand features of the word:
  English SV-# only in the present third person (MultiBLiMP's setting).
- Features. The agreement features are Number, Person and Gender. Ones missing on the agreeing word
  are taken from the subject (a NOUN subject without Person counts as third person). When subject and
  word both have a value and the values differ, the subject-word pair is dropped. Each agreement
  feature of the word is swapped to every other value (Number Sing/Plur/Dual, Person 1/2/3, Gender
  Masc/Fem/Neut/Com).
- Forms. A lexicon per language holds every VERB/AUX/participle form attested in the UD files given
  (words inside multi-word tokens included, e.g. "'m"; with UD features and count), plus UniMorph verb
  entries (lemma, form, ';'-tags, mapped to UD features; finite unless tagged as a participle,
  infinitive, converb or masdar; colloquial COL entries are skipped). The forms of a multi-word
  UniMorph lemma whose first words they repeat also count for its last word ("X kardan" gives the
  Persian light verb kardan its forms). A UniMorph paradigm belongs to the UD word when its lemma
  equals the UD lemma, else when it contains the word's form (UD lemmas differ by convention, e.g.
  Persian past stems). Features are compared on VerbForm, Mood, Tense, Aspect, Voice, Polarity,
  Person, Number, Gender, Case and Definite; a feature that one side leaves out is compatible with any
  value, except Polarity: negation is always marked, so a form without it is Pos on both sides.
- The swap. The word's form must be confirmed by the lexicon: some analysis of it has the original
  value of the swapped feature explicitly and is compatible with the word's features ("form not
  confirmed" otherwise: e.g. a Swedish finite verb, which has no number). Target analyses have the
  new value explicitly and are compatible with the word's other features; the most specific win (most
  features equal to the target, then fewest features the target lacks). Every form of theirs makes
  a pair (MultiBLiMP takes every form its lexicon has: "is" -> "am" and "'m"), except a form seen
  RARE_FORM_RATIO (100) times less often than the commonest (annotation noise), the original up to
  case ("identical form"), a form with an analysis that has the original value and is compatible with
  the word's features, so the wrong sentence could be grammatical ("ambiguous form"), and a form with
  a space ("multi-word form"); none left: "missing form" or the first of those reasons. Forms are
  compared casefolded and without zero-width non-joiners; Persian UniMorph spells without them, so a
  UniMorph form gets the original's ZWNJs at the same offsets where their beginnings agree. The new
  form copies the original's capitalisation.
- Rows. `sen` is the sentence above; `wrong_sen` replaces the word's characters; `prefix` is the text
  before the word, without trailing spaces; `distance` = word id - subject id (negative when the
  word comes first); `metadata` is JSON with the file, `sent_id`, ids and lemma. Feature values are
  UD's (Sing, Plur, 1, 2, 3, Masc, Fem, Neut, Com). Identical (sen, wrong_sen) rows are kept once.
- Balance. Within each phenomenon, no grammatical feature value makes up more than `max_share` of
  the items (default 0.5): the items of a larger value are subsampled to that share, by a stable
  hash of (seed, sen, wrong_sen). So a model that always prefers, say, the singular form scores at
  most 50% on SV-#. A phenomenon with a single value is kept whole when `max_share` is 1, dropped
  otherwise. Rows keep the order of the input files.
- Held-out files (`heldout_files`): in each `ud/UD_<Language>-<Treebank>/` folder of a language, the
  `*-test.conllu.gz` files, or the `*-dev.conllu.gz` where there is no test; never `ud/oldtrain/`.
  The lexicon may read every file of the language's folders (`lexicon_files`): only word forms are
  taken from them, never sentences.
"""
from __future__ import annotations

import ast
import contextlib
import csv
import functools
import gc
import gzip
import hashlib
import io
import json
import unicodedata
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import pandas as pd

from .. import languages
from ..artifacts import atomic
from ..errors import ConlluError, ParamError  # noqa: F401  (defined in errors.py)

COLUMNS = ["sen", "verb", "wrong_sen", "wrong_verb", "phenomenon", "lang", "grammatical_feature",
           "ungrammatical_feature", "child", "distance", "prefix", "metadata"]
PHENOMENA = ("SV-#", "SV-P", "SV-G", "SP-#", "SP-P", "SP-G")
AGREEMENT = {"Number": "#", "Person": "P", "Gender": "G"}
VALUES = {"Number": ("Sing", "Plur", "Dual"), "Person": ("1", "2", "3"), "Gender": ("Masc", "Fem", "Neut", "Com")}
TARGETS = {feature: {v: tuple(x for x in values if x != v) for v in values} for feature, values in VALUES.items()}
COMPARED = ("VerbForm", "Mood", "Tense", "Aspect", "Voice", "Polarity", "Person", "Number", "Gender",
            "Case", "Definite")
SUBJECT_RELATIONS = ("nsubj", "nsubj:pass")  # MultiBLiMP: nsubj only (see the module doc)
SUBJECT_UPOS = ("NOUN", "PRON")
HEAD_UPOS = ("VERB", "AUX")
SKIPPED_HEAD_RELATIONS = ("expl", "csubj:outer", "nsubj:outer")
MAX_WORDS = 64
# what the agreeing word must show, per language and phenomenon (MultiBLiMP: English number only in the
# present third person, where English verbs mark it)
REQUIRED = {("eng", "SV-#"): {"Tense": "Pres", "Person": "3"}}
ZWNJ = "\u200c"
RARE_FORM_RATIO = 100  # a UD form seen this many times less often than the commonest target form is noise
NON_FINITE = {"V.PTCP": "Part", "V.PTCP.PRS": "Part", "V.PTCP.PST": "Part", "NFIN": "Inf", "V.CVB": "Conv",
              "V.MSDR": "Vnoun"}
UNIMORPH_FEATURES = {
    "SG": ("Number", "Sing"), "PL": ("Number", "Plur"), "DU": ("Number", "Dual"),
    "1": ("Person", "1"), "2": ("Person", "2"), "3": ("Person", "3"),
    "MASC": ("Gender", "Masc"), "FEM": ("Gender", "Fem"), "NEUT": ("Gender", "Neut"),
    "PRS": ("Tense", "Pres"), "PST": ("Tense", "Past"), "FUT": ("Tense", "Fut"),
    "IND": ("Mood", "Ind"), "SBJV": ("Mood", "Sub"), "IMP": ("Mood", "Imp"), "COND": ("Mood", "Cnd"),
    "QUOT": ("Mood", "Qot"), "ACT": ("Voice", "Act"), "PASS": ("Voice", "Pass"), "MID": ("Voice", "Mid"),
    "NOM": ("Case", "Nom"), "ACC": ("Case", "Acc"), "DAT": ("Case", "Dat"), "GEN": ("Case", "Gen"),
    "DEF": ("Definite", "Def"), "INDF": ("Definite", "Ind"), "NEG": ("Polarity", "Neg"),
    "POS": ("Polarity", "Pos"), "PFV": ("Aspect", "Perf"), "IPFV": ("Aspect", "Imp"),
    "PROG": ("Aspect", "Prog"), "PRF": ("Aspect", "Perf"),
}


# ---------------------------------------------------------------- reading CoNLL-U

@dataclass(slots=True)
class Word:
    id: int
    form: str
    lemma: str
    upos: str
    feats: dict
    head: int
    deprel: str
    misc: dict
    in_mwt: bool = False  # part of a multi-word token: its characters are not its own


@dataclass
class Sentence:
    sent_id: str
    text: str | None
    words: list[Word]
    tokens: list[tuple[str, list[int]]]  # surface tokens: (form, ids of the words it spells)
    file: str = ""
    children: dict = field(default_factory=dict)  # head id -> [Word]


@functools.lru_cache(maxsize=None)
def _attributes(column: str) -> dict:
    """FEATS or MISC as a dict; cached (the same strings recur), so callers must not mutate it."""
    if column in ("_", ""):
        return {}
    return dict(item.split("=", 1) if "=" in item else (item, "") for item in column.split("|"))


def _lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file, plain or gzipped (read whole: much faster than line by line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        data = path.read_bytes()
        return (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).decode("utf-8").split("\n")
    except (UnicodeDecodeError, EOFError, OSError, zlib.error) as err:
        raise ConlluError(f"{path}: unreadable ({type(err).__name__}: {err})") from None


def read_conllu(path: str | Path) -> Iterator[Sentence]:
    """Sentences of a CoNLL-U file, plain or gzipped. Empty nodes (ids like 3.1) are skipped."""
    path = Path(path)
    comments: dict[str, str] = {}
    words: list[Word] = []
    tokens: list[tuple[str, list[int]]] = []
    mwt_end = 0

    def sentence() -> Sentence:
        children: dict[int, list[Word]] = defaultdict(list)
        for w in words:
            children[w.head].append(w)
        return Sentence(comments.get("sent_id", f"{path.name}#{len(words)}"), comments.get("text"),
                        words, tokens, path.name, children)

    for number, line in enumerate(_lines(path), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            if words:
                yield sentence()
            comments, words, tokens, mwt_end = {}, [], [], 0
        elif line.startswith("#"):
            key, sep, value = line[1:].partition("=")
            if sep:
                comments[key.strip()] = value.strip()
        else:
            cols = line.split("\t")
            if len(cols) != 10:
                raise ConlluError(f"{path}, line {number}: {len(cols)} tab-separated columns, CoNLL-U has 10")
            if "." in cols[0]:
                continue
            if "-" in cols[0]:
                first, last = (int(x) for x in cols[0].split("-"))
                tokens.append((cols[1], list(range(first, last + 1))))
                mwt_end = last
                continue
            try:
                wid, head = int(cols[0]), int(cols[6]) if cols[6] != "_" else -1
            except ValueError:
                raise ConlluError(f"{path}, line {number}: bad id {cols[0]!r} or head {cols[6]!r}") from None
            word = Word(wid, cols[1], cols[2], cols[3], _attributes(cols[5]), head, cols[7],
                        _attributes(cols[9]), in_mwt=wid <= mwt_end)
            words.append(word)
            if not word.in_mwt:
                tokens.append((word.form, [wid]))
    if words:
        yield sentence()


def offsets(sent: Sentence) -> dict[int, tuple[int, int]] | None:
    """Character span in `text` of every word that is its own token; None when the tokens do not
    spell the text in order (only whitespace may come between them)."""
    text, pos, spans = sent.text, 0, {}
    if text is None:
        return None
    for form, ids in sent.tokens:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if not text.startswith(form, pos):
            return None
        if len(ids) == 1:
            spans[ids[0]] = (pos, pos + len(form))
        pos += len(form)
    return spans if not text[pos:].strip() else None


def sentence_problem(sent: Sentence) -> str | None:
    """Why MultiBLiMP would not use a sentence (typo, foreign word, style, correction, reparandum, too
    long), or None."""
    if len(sent.words) > MAX_WORDS:
        return "too long"
    for w in sent.words:
        if w.feats.get("Typo") == "Yes":
            return "typo"
        if "Foreign" in w.feats:
            return "foreign"
        if "Style" in w.feats:
            return "style"
        if any("Correct" in k for k in w.misc):
            return "correction"
        if w.deprel == "reparandum":
            return "reparandum"
    return None


def words_text(sent: Sentence, replace: dict[int, str] | None = None) -> str:
    """The words joined by spaces except where MISC says SpaceAfter=No (MultiBLiMP's sentence for
    words inside multi-word tokens, e.g. "is n't")."""
    replace = replace or {}
    parts = []
    for w in sent.words:
        parts.append(replace.get(w.id, w.form))
        if w.misc.get("SpaceAfter") != "No":
            parts.append(" ")
    return "".join(parts).strip()


# ---------------------------------------------------------------- the lexicon

def _plain(form: str) -> str:
    return unicodedata.normalize("NFC", form).replace(ZWNJ, "").casefold()


def _compatible(a: dict, b: dict) -> bool:
    return all(a[k] == b[k] for k in a.keys() & b.keys())


def _finite(feats: dict) -> bool:
    verbform = feats.get("VerbForm")
    return verbform == "Fin" or (verbform is None and ("Person" in feats or "Mood" in feats))


def _ud_analysis(feats: dict) -> dict:
    """The compared features of a UD word; VerbForm=Fin when finite, Polarity=Pos unless marked."""
    out = {k: v for k, v in feats.items() if k in COMPARED}
    if "VerbForm" not in out and _finite(feats):
        out["VerbForm"] = "Fin"
    out.setdefault("Polarity", "Pos")
    return out


@functools.lru_cache(maxsize=None)
def unimorph_analysis(tags: str) -> dict | None:
    """UD features of a UniMorph verb tag string, e.g. 'V;IND;PRS;3;SG'; None for non-verbs and COL."""
    parts = set(tags.replace("+", ";").split(";"))
    if not any(p == "V" or p.startswith("V.") for p in parts) or "COL" in parts:
        return None
    feats = dict(UNIMORPH_FEATURES[p] for p in sorted(parts) if p in UNIMORPH_FEATURES)
    feats.setdefault("Polarity", "Pos")
    verbform = next((NON_FINITE[p] for p in sorted(parts) if p in NON_FINITE), "Fin")
    feats["VerbForm"] = verbform
    if "V.PTCP.PRS" in parts:
        feats["Tense"] = "Pres"
    if "V.PTCP.PST" in parts:
        feats["Tense"] = "Past"
    return feats


def read_unimorph(path: str | Path) -> Iterator[tuple[str, str, dict]]:
    """(lemma, form, UD features) of every verb entry of a UniMorph table (TSV, plain or gzipped).

    An entry "X Y" of lemma "X Z" is also yielded as form Y of lemma Z (light verbs, see the module doc).
    """
    for line in _lines(path):
        cols = line.rstrip("\r").split("\t")
        if len(cols) < 3 or not cols[0] or not cols[1]:
            continue
        feats = unimorph_analysis(cols[2])
        if feats is None:
            continue
        lemma, form = unicodedata.normalize("NFC", cols[0]), unicodedata.normalize("NFC", cols[1])
        yield lemma, form, feats
        head, _, last = lemma.rpartition(" ")
        if head and form.startswith(head + " "):
            yield last, form[len(head) + 1:], feats


@dataclass(slots=True)
class Analysis:
    form: str
    feats: dict
    count: int = 0  # times attested in UD (0: UniMorph only)


class Lexicon:
    """Verb forms with their features, from UD words and UniMorph entries."""

    def __init__(self) -> None:
        self.ud: dict[str, Counter] = defaultdict(Counter)  # lemma -> (form, feats tuple) -> count
        self.unimorph: dict[str, set] = defaultdict(set)  # lemma -> {(form, feats tuple)}
        self.unimorph_by_form: dict[str, set] = defaultdict(set)  # plain form -> lemmas
        self._cache: dict[tuple, list[Analysis]] = {}
        self.swaps: dict[tuple, tuple | str] = {}  # swap() results by word and feature

    def add_sentence(self, sent: Sentence) -> None:
        for w in sent.words:  # words inside multi-word tokens count too ("'m" of "I'm"), as in MultiBLiMP
            if w.upos in ("VERB", "AUX") or w.feats.get("VerbForm") == "Part":
                key = tuple(sorted(_ud_analysis(w.feats).items()))
                self.ud[w.lemma][(unicodedata.normalize("NFC", w.form), key)] += 1
        self._cache.clear()
        self.swaps.clear()

    def add_file(self, path: str | Path) -> None:
        """The verb forms of a CoNLL-U file, read without building sentences (for lexicon-only files)."""
        for line in _lines(path):
            if line[:1].isdigit():
                cols = line.rstrip("\r").split("\t")
                if len(cols) != 10 or "." in cols[0] or "-" in cols[0]:
                    continue
                if cols[3] in ("VERB", "AUX") or "VerbForm=Part" in cols[5]:
                    key = tuple(sorted(_ud_analysis(_attributes(cols[5])).items()))
                    self.ud[cols[2]][(unicodedata.normalize("NFC", cols[1]), key)] += 1
        self._cache.clear()
        self.swaps.clear()

    def add_unimorph(self, entries: Iterable[tuple[str, str, dict]]) -> None:
        for lemma, form, feats in entries:
            self.unimorph[lemma].add((form, tuple(sorted(feats.items()))))
            self.unimorph_by_form[_plain(form)].add(lemma)
        self._cache.clear()
        self.swaps.clear()

    def analyses(self, word: Word) -> list[Analysis]:
        """Every analysis of the word's lemma and linked UniMorph paradigms (module doc)."""
        own = _ud_analysis(word.feats)
        key = (word.lemma, word.form, tuple(sorted(own.items())))
        if key not in self._cache:
            out = [Analysis(form, dict(feats), n) for (form, feats), n in self.ud.get(word.lemma, {}).items()]
            if word.lemma in self.unimorph:
                lemmas = {word.lemma}
            else:
                plain = _plain(word.form)
                lemmas = {lemma for lemma in self.unimorph_by_form.get(plain, ())
                          if any(_plain(f) == plain and _compatible(dict(t), own) for f, t in self.unimorph[lemma])}
            for lemma in sorted(lemmas):
                out += [Analysis(_transfer_zwnj(word.form, form), dict(feats))
                        for form, feats in sorted(self.unimorph[lemma])]
            self._cache[key] = out
        return self._cache[key]


def _transfer_zwnj(original: str, form: str) -> str:
    if ZWNJ in form or ZWNJ not in original:
        return form
    cuts, k = [], 0
    for ch in original:
        if ch == ZWNJ:
            cuts.append(k)
        else:
            k += 1
    plain = original.replace(ZWNJ, "")
    for k in reversed(cuts):
        if 0 < k < len(form) and form[:k] == plain[:k]:
            form = form[:k] + ZWNJ + form[k:]
    return form


def _match_case(original: str, form: str) -> str:
    if len(original) > 1 and original.isupper():
        return form.upper()
    return (str.upper if original[:1].isupper() else str.lower)(form[:1]) + form[1:]


# ---------------------------------------------------------------- items

@dataclass
class Candidate:
    """One subject and one agreeing word, before the form swap."""
    subject: Word
    word: Word
    kind: str  # SV or SP
    feats: dict  # the word's analysis with agreement features filled from the subject
    tested: tuple  # the agreement features to swap


def _subject_features(subject: Word) -> dict:
    feats = {k: subject.feats[k] for k in AGREEMENT if k in subject.feats}
    if subject.upos == "NOUN":
        feats.setdefault("Person", "3")
    return feats


def _clause_problem(sent: Sentence, subject: Word, head: Word) -> str | None:
    if any(k.deprel == "conj" for k in sent.children.get(subject.id, [])):
        return "conjoined subject"
    for kid in sent.children.get(head.id, []):
        found = next((r for r in SKIPPED_HEAD_RELATIONS if r in kid.deprel), None)
        if found:
            return "expletive" if found == "expl" else "outer subject"
    return None


def _agreeing_words(sent: Sentence, head: Word) -> list[tuple[Word, str]]:
    """(word, kind): for SV the head's first auxiliary or copula, else the head itself; for SP the head
    when it is a participle VERB (MultiBLiMP's two filters)."""
    helper = next((k for k in sent.children.get(head.id, []) if k.deprel == "cop" or k.deprel.startswith("aux")),
                  None)
    out = [(helper or head, "SV")]
    if head.feats.get("VerbForm") == "Part":
        out.append((head, "SP"))
    return out


def candidates(sent: Sentence, reasons: Counter) -> list[Candidate]:
    """Subject-word pairs of a sentence that pass the clause filters (reasons counts the others)."""
    by_id = {w.id: w for w in sent.words}
    out = []
    for subject in sent.words:
        head = by_id.get(subject.head)
        if subject.deprel not in SUBJECT_RELATIONS or subject.upos not in SUBJECT_UPOS or head is None:
            continue
        if head.upos not in HEAD_UPOS and head.feats.get("VerbForm") != "Part":
            reasons["head not a verb"] += 1
            continue
        problem = _clause_problem(sent, subject, head)
        if problem:
            reasons[problem] += 1
            continue
        subject_feats = _subject_features(subject)
        for word, kind in _agreeing_words(sent, head):
            own = _ud_analysis(word.feats)
            if own.get("VerbForm") != ("Part" if kind == "SP" else "Fin"):
                reasons["no agreeing word"] += 1
                continue
            if not _compatible({k: own[k] for k in AGREEMENT if k in own}, subject_feats):
                reasons["subject-verb feature mismatch"] += 1
                continue
            feats = {**subject_feats, **own}
            out.append(Candidate(subject, word, kind, feats, tuple(f for f in AGREEMENT if f in feats)))
    return out


def swap(cand: Candidate, feature: str, lexicon: Lexicon) -> list[tuple[str, str]] | str:
    """Every (new value, new form) for swapping one feature of the word, or why there is none."""
    word, feats = cand.word, cand.feats
    options = TARGETS[feature].get(feats[feature])
    if not options:
        return "no target value"
    key = (word.lemma, word.form, tuple(sorted(feats.items())), feature)
    if key not in lexicon.swaps:
        lexicon.swaps[key] = _swap(word, feats, feature, options, lexicon.analyses(word))
    result = lexicon.swaps[key]
    return result if isinstance(result, str) else [(value, _match_case(word.form, form)) for value, form in result]


def _swap(word: Word, feats: dict, feature: str, options: tuple, analyses: list[Analysis]) -> list | str:
    value = feats[feature]
    original = _plain(word.form)
    grammatical = {_plain(a.form) for a in analyses if a.feats.get(feature) == value and _compatible(a.feats, feats)}
    if original not in grammatical:
        return "form not confirmed"
    found, first_reason = [], None
    for new in options:
        target = {**feats, feature: new}
        matches = [a for a in analyses if a.feats.get(feature) == new and _compatible(a.feats, target)]
        result = _choose(matches, target, original, grammatical)
        if isinstance(result, str):
            first_reason = first_reason or result
        else:
            found += [(new, form) for form in result if (new, form) not in found]
    return found or first_reason


def _choose(found: list[Analysis], target: dict, original: str, grammatical: set[str]) -> list[str] | str:
    """Every target form, or why there is none. The most specific analyses win (most features equal to
    the target, then fewest features the target lacks); of their forms, all are kept (MultiBLiMP takes
    every form its lexicon has) except a UD form RARE_FORM_RATIO times rarer than the commonest (noise),
    the original, forms that also have the original value (`grammatical`: the wrong sentence could be
    right) and multi-word forms."""
    if not found:
        return "missing form"

    def specificity(a: Analysis) -> tuple[int, int]:
        return sum(a.feats.get(k) == v for k, v in target.items()), -len(a.feats.keys() - target.keys())

    best = max(specificity(a) for a in found)
    spelling: dict[str, Counter] = defaultdict(Counter)
    for a in found:
        if specificity(a) == best:
            spelling[_plain(a.form)][a.form] += a.count or 1
    top = max(sum(c.values()) for c in spelling.values())
    forms, reason = [], "identical form"
    for plain in sorted(spelling):
        if RARE_FORM_RATIO * sum(spelling[plain].values()) < top:
            continue
        form = min(spelling[plain], key=lambda f: (-spelling[plain][f], f))
        if plain == original:
            continue
        if plain in grammatical:
            reason = "ambiguous form"
        elif " " in form.strip():
            reason = "multi-word form"
        else:
            forms.append(form)
    return forms or reason


def _sentence_frame(sent: Sentence, word: Word, spans: dict | None) -> tuple[str, str, str] | None:
    """(sentence, text before the word, text after it): the `# text` where the word is its own token,
    else the words joined as MultiBLiMP joins them; None when the word has no place in either."""
    span = spans.get(word.id) if spans else None
    if span is not None:
        return sent.text, sent.text[:span[0]], sent.text[span[1]:]
    marker = "\x00"
    joined = words_text(sent, {word.id: marker})
    before, _, after = joined.partition(marker)
    return joined.replace(marker, word.form), before, after


def _meets_requirements(cand: Candidate, lang: str, phenomenon: str) -> bool:
    required = REQUIRED.get((lang, phenomenon), {})
    return all(cand.feats.get(k) == v for k, v in required.items())


def sentence_items(sent: Sentence, lang: str, lexicon: Lexicon, reasons: Counter) -> list[dict]:
    """The MultiBLiMP rows of one sentence (reasons counts everything dropped)."""
    problem = sentence_problem(sent)
    if problem:
        reasons[problem] += 1
        return []
    spans = offsets(sent)
    rows = []
    for cand in candidates(sent, reasons):
        word = cand.word
        text, before, after = _sentence_frame(sent, word, spans)
        for feature in cand.tested:
            phenomenon = f"{cand.kind}-{AGREEMENT[feature]}"
            if not _meets_requirements(cand, lang, phenomenon):
                reasons["not a tested form"] += 1
                continue
            result = swap(cand, feature, lexicon)
            if isinstance(result, str):
                reasons[result] += 1
                continue
            meta = {"file": sent.file, "sent_id": sent.sent_id, "verb_id": word.id, "child_id": cand.subject.id,
                    "lemma": word.lemma, "upos": word.upos, "deprel": word.deprel}
            for new_value, new_form in result:
                rows.append({
                    "sen": text, "verb": word.form, "wrong_sen": before + new_form + after,
                    "wrong_verb": new_form, "phenomenon": phenomenon, "lang": lang,
                    "grammatical_feature": cand.feats[feature], "ungrammatical_feature": new_value,
                    "child": cand.subject.form, "distance": word.id - cand.subject.id,
                    "prefix": before.rstrip(), "metadata": json.dumps(meta, ensure_ascii=False),
                })
    return rows


# ---------------------------------------------------------------- building and balancing

def _rank(seed: int, row: dict) -> str:
    return hashlib.sha256(f"{seed}\x00{row['sen']}\x00{row['wrong_sen']}".encode()).hexdigest()


def balance(rows: list[dict], seed: int = 0, max_share: float = 0.5) -> list[dict]:
    """Subsample so that within each phenomenon no grammatical feature value exceeds max_share of the
    items (see the module doc); the kept rows stay in their order."""
    if not 0 < max_share <= 1:
        raise ParamError(f"max_share must be in (0, 1], got {max_share}")
    groups: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, row in enumerate(rows):
        groups[row["phenomenon"]][row["grammatical_feature"]].append(i)
    keep: set[int] = set()
    for values in groups.values():
        sizes = {v: len(idx) for v, idx in values.items()}
        for v, idx in values.items():
            others = sum(sizes.values()) - sizes[v]
            # largest n with n / (n + others) <= max_share
            cap = len(idx) if max_share == 1 else int(max_share * others / (1 - max_share) + 1e-9)
            keep.update(sorted(idx, key=lambda i: _rank(seed, rows[i]))[:cap])
    return [row for i, row in enumerate(rows) if i in keep]


@dataclass
class Built:
    pairs: pd.DataFrame
    reasons: Counter  # why candidate items and sentences were dropped
    before_balance: Counter  # items per phenomenon before balancing
    sentences: int


def build_lexicon(conllu_files: Iterable[str | Path], unimorph: str | Path | None = None) -> Lexicon:
    lexicon = Lexicon()
    for path in conllu_files:
        lexicon.add_file(path)
    if unimorph is not None:
        lexicon.add_unimorph(read_unimorph(unimorph))
    return lexicon


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """Parsing creates millions of small objects, none cyclic: the cyclic collector only costs time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def build_pairs(conllu_files: Iterable[str | Path], lang: str, unimorph: str | Path | None = None,
                lexicon_files: Iterable[str | Path] = (), seed: int = 0, max_share: float = 0.5) -> Built:
    """MultiBLiMP rows (COLUMNS) from the sentences of `conllu_files`; forms from those files, the
    extra `lexicon_files` and the UniMorph table."""
    try:
        code = languages.to_code(lang)
    except ValueError:  # any language with a treebank: its code is taken as given
        code = lang
    conllu_files = [Path(f) for f in conllu_files]
    with _no_gc():
        sentences = [s for f in conllu_files for s in read_conllu(f)]
        extra = {Path(f).resolve() for f in lexicon_files} - {f.resolve() for f in conllu_files}
        lexicon = build_lexicon(sorted(extra), unimorph)
        for sent in sentences:
            lexicon.add_sentence(sent)
        reasons: Counter = Counter()
        rows, seen = [], set()
        for sent in sentences:
            for row in sentence_items(sent, code, lexicon, reasons):
                if (row["sen"], row["wrong_sen"]) not in seen:
                    seen.add((row["sen"], row["wrong_sen"]))
                    rows.append(row)
    before = Counter(r["phenomenon"] for r in rows)
    rows = balance(rows, seed, max_share)
    return Built(pd.DataFrame(rows, columns=COLUMNS), reasons, before, len(sentences))


def write_data_tsv(pairs: pd.DataFrame, path: str | Path) -> Path:
    """Write pairs as a MultiBLiMP data.tsv (tab-separated, header, csv quoting), atomically."""
    buffer = io.StringIO()
    pairs.to_csv(buffer, sep="\t", index=False, columns=[c for c in COLUMNS if c in pairs] +
                 [c for c in pairs if c not in COLUMNS], lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    atomic.write_text(Path(path), buffer.getvalue())
    return Path(path)


def counts(pairs: pd.DataFrame) -> dict[str, int]:
    """Pairs per phenomenon (every phenomenon listed, zeros included) and the total."""
    found = Counter(pairs["phenomenon"]) if len(pairs) else Counter()
    return {**{ph: int(found.get(ph, 0)) for ph in PHENOMENA}, "total": int(len(pairs))}


# ---------------------------------------------------------------- the data folder

def treebanks(data_dir: str | Path) -> dict[str, list[Path]]:
    """ISO code -> its `ud/UD_<Language>-<Treebank>` folders, for the languages of `languages`."""
    out: dict[str, list[Path]] = defaultdict(list)
    ud = Path(data_dir) / "ud"
    for folder in sorted(ud.glob("UD_*")) if ud.is_dir() else []:
        name = folder.name[3:].split("-")[0].lower()
        try:
            out[languages.to_code(name)].append(folder)
        except ValueError:
            continue
    return dict(out)


def heldout_files(data_dir: str | Path, lang: str) -> list[Path]:
    """Each treebank's test file(s), or its dev file(s) where there is no test; never ud/oldtrain."""
    files = []
    for folder in treebanks(data_dir).get(languages.to_code(lang), []):
        files += sorted(folder.glob("*-test.conllu.gz")) or sorted(folder.glob("*-dev.conllu.gz"))
    return files


def lexicon_files(data_dir: str | Path, lang: str) -> list[Path]:
    """Every CoNLL-U file of the language's treebank folders (forms only; never ud/oldtrain)."""
    return [f for folder in treebanks(data_dir).get(languages.to_code(lang), [])
            for f in sorted(folder.glob("*.conllu.gz"))]


def unimorph_file(data_dir: str | Path, lang: str) -> Path | None:
    path = Path(data_dir) / "unimorph" / f"{languages.to_code(lang)}.gz"
    return path if path.is_file() else None


def build_language(data_dir: str | Path, lang: str, seed: int = 0, max_share: float = 0.5) -> Built:
    """Pairs of one language from its held-out UD files, with every UD file and UniMorph as lexicon."""
    files = heldout_files(data_dir, lang)
    if not files:
        raise FileNotFoundError(f"no UD treebank for {lang!r} under {Path(data_dir) / 'ud'}")
    return build_pairs(files, lang, unimorph_file(data_dir, lang), lexicon_files(data_dir, lang), seed, max_share)


# ---------------------------------------------------------------- comparing with MultiBLiMP 1.0

RELEASED_COUNTS = {"est": 2575, "fao": 232, "isl": 2801, "fas": 2553, "swe": 201, "eng": 770}  # MultiBLiMP 1.0 items


def counts_against_released(built: dict[str, "Built"]) -> pd.DataFrame:
    """Per language: pairs we build (after and before balancing) next to MultiBLiMP 1.0's item count."""
    rows = [{"lang": lang, "built": len(b.pairs), "before_balancing": sum(b.before_balance.values()),
             "multiblimp_1_0": RELEASED_COUNTS.get(lang)} for lang, b in built.items()]
    return pd.DataFrame(rows, columns=["lang", "built", "before_balancing", "multiblimp_1_0"])


def _squeeze(text: str) -> str:
    return "".join(text.split())


def _released_key(row) -> tuple[str, str] | None:
    """(sent_id, wrong sentence without whitespace) of a released row; None without a sent_id."""
    try:
        meta = ast.literal_eval(row["metadata"]) if isinstance(row["metadata"], str) else {}
    except (ValueError, SyntaxError):
        return None
    sent_id = meta.get("sent_id") if isinstance(meta, dict) else None
    return (sent_id, _squeeze(row["wrong_sen"])) if sent_id else None


def recovered_share(released: pd.DataFrame, ours: pd.DataFrame, files: Iterable[str]) -> tuple[int, int]:
    """(released pairs from `files` that we also build, released pairs from `files`). A pair is the
    same when the sentence id and the wrong sentence (whitespace ignored: MultiBLiMP writes "is n't"
    where the text has "isn't") agree. `released` has MultiBLiMP's columns (its metadata names the
    treebank file as `UD_X/name.conllu`)."""
    names = {Path(str(f)).name.removesuffix(".gz") for f in files}
    mine = {(json.loads(m)["sent_id"], _squeeze(w)) for m, w in zip(ours["metadata"], ours["wrong_sen"])}
    total = found = 0
    for _, row in released.iterrows():
        key = _released_key(row)
        treebank = str(row["metadata"]).split("'treebank': '")[-1].split("'")[0]
        if key is None or Path(treebank).name not in names:
            continue
        total += 1
        found += key in mine
    return found, total
