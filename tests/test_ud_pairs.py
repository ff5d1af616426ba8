"""MultiBLiMP-style pairs from UD (hyperllama_lib.evaluation.ud_pairs): every filter and phenomenon on hand-written
CoNLL-U in a toy language ("xx") whose verb forms are all distinct, the data.tsv round trip, balancing,
the `build-pairs` command, and (with ../shared/data) the real held-out treebanks."""
import gzip
import json

import pandas as pd
import pytest

from hyperllama_lib import cli, corpus
from hyperllama_lib.errors import DataError
from hyperllama_lib.evaluation import pair_sources, ud_pairs

UNIMORPH = """\
sing\tsings\tV;IND;PRS;3;SG
sing\tsingen\tV;IND;PRS;3;PL
sing\tsingo\tV;IND;PRS;1;SG
sing\tsingem\tV;IND;PRS;1;PL
sing\tsingst\tV;IND;PRS;2;SG
be\tis\tV;IND;PRS;3;SG
be\tare\tV;IND;PRS;3;PL
be\tam\tV;IND;PRS;1;SG
run\tranm\tV;IND;PST;3;SG;MASC
run\tranf\tV;IND;PST;3;SG;FEM
run\tranp\tV;IND;PST;3;PL
write\twrittenf\tV.PTCP;PST;SG;FEM
write\twrittenm\tV.PTCP;PST;SG;MASC
write\twrittenfp\tV.PTCP;PST;PL;FEM
do\tdoneo\tV.PTCP;PST;1;SG
do\tdonee\tV.PTCP;PST;3;SG
put\tput\tV;IND;PST;3;SG
put\tput\tV;IND;PST;3;PL
hop\thopt\tV;IND;PRS;3;SG
hop\thops\tV;IND;PRS;3;SG
hop\thops\tV;IND;PRS;3;PL
walk\twalks\tV;IND;PRS;3;SG
walk\tdo walk\tV;IND;PRS;3;PL
swim\tswims\tV;IND;PRS;3;SG
"""
FIN = "Mood=Ind|Number=Sing|Person=3|Tense=Pres|VerbForm=Fin"


def dog(verb="sings", lemma="sing", feats=FIN, subject_feats="Number=Sing", change=None):
    """'The dog sings .' as word rows (form, lemma, upos, feats, head, deprel, misc)."""
    words = [["The", "the", "DET", "", 2, "det", ""], ["dog", "dog", "NOUN", subject_feats, 3, "nsubj", ""],
             [verb, lemma, "VERB", feats, 0, "root", ""], [".", ".", "PUNCT", "", 3, "punct", ""]]
    for (i, column), value in (change or {}).items():
        words[i][column] = value
    return words


def conllu(words, sent_id="s1", text=None, mwt=None) -> str:
    """A CoNLL-U sentence; mwt = (first id, last id, surface form) adds a multi-word token line."""
    lines = [f"# sent_id = {sent_id}", f"# text = {text or ' '.join(w[0] for w in words)}"]
    for i, (form, lemma, upos, feats, head, deprel, misc) in enumerate(words, start=1):
        if mwt and mwt[0] == i:
            lines.append(f"{mwt[0]}-{mwt[1]}\t{mwt[2]}\t_\t_\t_\t_\t_\t_\t_\t_")
        lines.append("\t".join([str(i), form, lemma, upos, "_", feats or "_", str(head), deprel, "_", misc or "_"]))
    return "\n".join(lines) + "\n\n"


@pytest.fixture
def unimorph(tmp_path):
    path = tmp_path / "xx.tsv"
    path.write_text(UNIMORPH, encoding="utf-8")
    return path


def build(tmp_path, unimorph, *sentences, name="x.conllu", **kw):
    path = tmp_path / name
    path.write_text("".join(sentences), encoding="utf-8")
    return ud_pairs.build_pairs([path], "xx", unimorph, max_share=1.0, **kw)


def pairs_of(built) -> set[tuple[str, str, str, str]]:
    return {(r.phenomenon, r.grammatical_feature, r.ungrammatical_feature, r.wrong_sen)
            for r in built.pairs.itertuples()}


# ---------------------------------------------------------------- phenomena

def test_subject_verb_number_and_person(tmp_path, unimorph):
    built = build(tmp_path, unimorph, conllu(dog()))
    # every other value and every form the lexicon has for it, as MultiBLiMP does
    assert pairs_of(built) == {("SV-#", "Sing", "Plur", "The dog singen ."), ("SV-P", "3", "1", "The dog singo ."),
                               ("SV-P", "3", "2", "The dog singst .")}
    row = built.pairs.iloc[0]
    assert (row.sen, row.verb, row.child, row.distance, row.prefix, row.lang) == \
        ("The dog sings .", "sings", "dog", 1, "The dog", "xx")
    meta = json.loads(row.metadata)
    assert meta["sent_id"] == "s1" and meta["file"] == "x.conllu" and meta["verb_id"] == 3


def test_every_other_person_and_verb_first(tmp_path, unimorph):
    # the verb before its subject gives a negative distance and a prefix without the subject
    words = [["Singo", "sing", "VERB", "Mood=Ind|Number=Sing|Person=1|Tense=Pres|VerbForm=Fin", 0, "root", ""],
             ["I", "I", "PRON", "Number=Sing|Person=1|PronType=Prs", 1, "nsubj", ""]]
    built = build(tmp_path, unimorph, conllu(words))
    assert pairs_of(built) == {("SV-#", "Sing", "Plur", "Singem I"), ("SV-P", "1", "3", "Sings I"),
                               ("SV-P", "1", "2", "Singst I")}
    assert set(built.pairs.distance) == {-1} and set(built.pairs.prefix) == {""}


def test_subject_verb_gender(tmp_path, unimorph):
    feats = "Gender=Masc|Mood=Ind|Number=Sing|Person=3|Tense=Past|VerbForm=Fin"
    built = build(tmp_path, unimorph, conllu(dog("ranm", "run", feats, "Gender=Masc|Number=Sing")))
    assert ("SV-G", "Masc", "Fem", "The dog ranf .") in pairs_of(built)
    assert ("SV-#", "Sing", "Plur", "The dog ranp .") in pairs_of(built)


def test_nominal_predicates_are_skipped_copulas_of_verbs_agree(tmp_path, unimorph):
    # MultiBLiMP takes subjects of VERB/AUX heads only; their first auxiliary or copula is the agreeing word
    words = [["The", "the", "DET", "", 2, "det", ""], ["dog", "dog", "NOUN", "Number=Sing", 4, "nsubj", ""],
             ["is", "be", "AUX", FIN, 4, "cop", ""], ["big", "big", "ADJ", "Degree=Pos", 0, "root", ""]]
    built = build(tmp_path, unimorph, conllu(words))
    assert built.pairs.empty and built.reasons["head not a verb"] == 1
    words[3][2] = "VERB"
    assert pairs_of(build(tmp_path, unimorph, conllu(words))) == {
        ("SV-#", "Sing", "Plur", "The dog are big"), ("SV-P", "3", "1", "The dog am big")}


def _letter(aux_feats: str, aux: str = "is", aux_lemma: str = "be"):
    return [["The", "the", "DET", "", 2, "det", ""],
            ["letter", "letter", "NOUN", "Gender=Fem|Number=Sing", 4, "nsubj:pass", ""],
            [aux, aux_lemma, "AUX", aux_feats, 4, "aux:pass", ""],
            ["writtenf", "write", "VERB", "Gender=Fem|Number=Sing|Tense=Past|VerbForm=Part", 0, "root", ""]]


def test_auxiliary_and_participle_agree_separately(tmp_path, unimorph):
    # MultiBLiMP's SV filter swaps the auxiliary, its SP filter the participle head, each in every feature
    built = build(tmp_path, unimorph, conllu(_letter(FIN)))
    assert pairs_of(built) == {("SV-#", "Sing", "Plur", "The letter are writtenf"),
                               ("SV-P", "3", "1", "The letter am writtenf"),
                               ("SP-#", "Sing", "Plur", "The letter is writtenfp"),
                               ("SP-G", "Fem", "Masc", "The letter is writtenm")}


def test_participle_number_when_the_auxiliary_does_not_inflect(tmp_path, unimorph):
    # Swedish-like: the auxiliary has no number or person, so it yields nothing and the participle SP-#
    built = build(tmp_path, unimorph, conllu(_letter("Mood=Ind|Tense=Pres|VerbForm=Fin", "ar", "vara")))
    assert pairs_of(built) == {("SP-#", "Sing", "Plur", "The letter ar writtenfp"),
                               ("SP-G", "Fem", "Masc", "The letter ar writtenm")}
    assert built.reasons["form not confirmed"] >= 1  # the auxiliary's number, taken from the subject


def test_participle_person(tmp_path, unimorph):
    words = [["I", "I", "PRON", "Number=Sing|Person=1", 2, "nsubj", ""],
             ["doneo", "do", "VERB", "Number=Sing|Person=1|Tense=Past|VerbForm=Part", 0, "root", ""]]
    assert ("SP-P", "1", "3", "I donee") in pairs_of(build(tmp_path, unimorph, conllu(words)))


def test_forms_attested_in_ud_count_and_capitalisation_is_kept(tmp_path, unimorph):
    lexicon = tmp_path / "lex.conllu"
    lexicon.write_text(conllu([["Cats", "cat", "NOUN", "Number=Plur", 2, "nsubj", ""],
                               ["purren", "purr", "VERB", FIN.replace("Sing", "Plur"), 0, "root", ""]]))
    words = [["Purrs", "purr", "VERB", FIN, 0, "root", ""], ["cat", "cat", "NOUN", "Number=Sing", 1, "nsubj", ""]]
    built = build(tmp_path, unimorph, conllu(words), lexicon_files=[lexicon])
    assert pairs_of(built) == {("SV-#", "Sing", "Plur", "Purren cat")}


def test_gzipped_input_gives_the_same_pairs(tmp_path, unimorph):
    plain = build(tmp_path, unimorph, conllu(dog()))
    gz = tmp_path / "x.conllu.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write(conllu(dog()))
    zipped = ud_pairs.build_pairs([gz], "xx", unimorph, max_share=1.0)
    assert pairs_of(zipped) == pairs_of(plain)


# ---------------------------------------------------------------- filters

@pytest.mark.parametrize("change, reason", [
    ({(1, 3): "Number=Sing|Typo=Yes"}, "typo"),
    ({(1, 3): "Foreign=Yes|Number=Sing"}, "foreign"),
    ({(1, 3): "Number=Sing|Style=Coll"}, "style"),
    ({(1, 6): "CorrectForm=dogs"}, "correction"),
    ({(0, 5): "reparandum"}, "reparandum"),
    ({(1, 3): "Number=Plur"}, "subject-verb feature mismatch"),
])
def test_sentence_and_agreement_filters(tmp_path, unimorph, change, reason):
    built = build(tmp_path, unimorph, conllu(dog(change=change)))
    assert built.pairs.empty and built.reasons[reason] >= 1


@pytest.mark.parametrize("extra, reason", [
    (["cat", "cat", "NOUN", "Number=Sing", 2, "conj", ""], "conjoined subject"),
    (["there", "there", "PRON", "", 3, "expl", ""], "expletive"),
    (["Today", "today", "NOUN", "Number=Sing", 3, "nsubj:outer", ""], "outer subject"),
])
def test_clause_filters(tmp_path, unimorph, extra, reason):
    words = dog() + [extra]
    built = build(tmp_path, unimorph, conllu(words))
    assert built.pairs.empty and built.reasons[reason] == 1


@pytest.mark.parametrize("verb, lemma, feats, reason", [
    ("swims", "swim", FIN, "missing form"),
    ("put", "put", FIN.replace("Pres", "Past"), "identical form"),
    ("hopt", "hop", FIN, "ambiguous form"),
    ("walks", "walk", FIN, "multi-word form"),
])
def test_form_filters(tmp_path, unimorph, verb, lemma, feats, reason):
    built = build(tmp_path, unimorph, conllu(dog(verb, lemma, feats)))
    assert not (built.pairs.phenomenon == "SV-#").any() and built.reasons[reason] >= 1


def test_verb_inside_a_multi_word_token_or_text_mismatch_uses_the_words(tmp_path, unimorph):
    # as MultiBLiMP: the words joined by spaces (none after SpaceAfter=No), e.g. "is n't"
    for sentence in (conllu(dog(), text="The dogsings .", mwt=(2, 3, "dogsings")),
                     conllu(dog(change={(1, 6): "SpaceAfter=No"}), text="A dog sings .")):
        built = build(tmp_path, unimorph, sentence)
        assert ("SV-#", "Sing", "Plur", built.pairs.sen.iloc[0].replace("sings", "singen")) in pairs_of(built)
    assert set(built.pairs.sen) == {"The dogsings ."} and set(built.pairs.prefix) == {"The dog"}


def test_every_lexicon_form_words_in_multi_word_tokens_included(tmp_path, unimorph):
    lexicon = tmp_path / "lex.conllu"
    lexicon.write_text(conllu([["I", "I", "PRON", "Number=Sing|Person=1", 2, "nsubj", ""],
                               ["'m", "be", "AUX", FIN.replace("=3", "=1"), 3, "aux", ""],
                               ["going", "go", "VERB", "VerbForm=Part", 0, "root", ""]], mwt=(1, 2, "I'm")))
    words = [["He", "he", "PRON", "Number=Sing|Person=3", 2, "nsubj", ""], ["is", "be", "AUX", FIN, 0, "root", ""]]
    built = build(tmp_path, unimorph, conllu(words), lexicon_files=[lexicon])
    assert {r[3] for r in pairs_of(built) if r[0] == "SV-P"} == {"He am", "He 'm"}


def test_english_number_only_in_the_present_third_person(tmp_path, unimorph):
    past = FIN.replace("Pres", "Past").replace("sings", "sang")
    for feats, n in ((FIN, 1), (past, 0)):
        path = tmp_path / "x.conllu"
        path.write_text(conllu(dog("sings", "sing", feats)))
        built = ud_pairs.build_pairs([path], "eng", unimorph, max_share=1.0)
        assert (built.pairs.phenomenon == "SV-#").sum() == n and built.reasons["not a tested form"] == 1 - n


def test_unimorph_reading_light_verbs_and_zwnj():
    assert ud_pairs.unimorph_analysis("V;IND;PRS;3;SG") == {"Mood": "Ind", "Tense": "Pres", "Person": "3",
                                                            "Number": "Sing", "Polarity": "Pos", "VerbForm": "Fin"}
    assert ud_pairs.unimorph_analysis("N;NOM;SG") is None and ud_pairs.unimorph_analysis("V;1;SG;COL") is None
    assert ud_pairs.unimorph_analysis("V.PTCP;PST;PL")["VerbForm"] == "Part"
    assert ud_pairs._transfer_zwnj("می\u200cکنم", "میکنند") == "می\u200cکنند"
    assert ud_pairs._transfer_zwnj("می\u200cکنم", "کنند") == "کنند"


def test_light_verb_forms_from_multi_word_lemmas(tmp_path):
    path = tmp_path / "fas.tsv"
    path.write_text("x kardan\tx mikonam\tV;1;SG;PRS\nx kardan\tdaram x mikonam\tV;1;SG;PROG\n")
    entries = [(lemma, form) for lemma, form, _ in ud_pairs.read_unimorph(path)]
    assert entries == [("x kardan", "x mikonam"), ("kardan", "mikonam"), ("x kardan", "daram x mikonam")]


# ---------------------------------------------------------------- output and balance

def test_data_tsv_round_trip_through_the_loaders(tmp_path, unimorph):
    words = dog() + [['"', '"', "PUNCT", "", 3, "punct", ""]]
    built = build(tmp_path, unimorph, conllu(words))
    out = ud_pairs.write_data_tsv(built.pairs, tmp_path / "xx" / "data.tsv")
    loaded = pair_sources.load_multiblimp_local(out)
    assert list(loaded.good) == list(built.pairs.sen) and list(loaded.bad) == list(built.pairs.wrong_sen)
    assert loaded.good.iloc[0] == 'The dog sings . "'
    assert set(loaded.paradigm) == {"SV-#", "SV-P"} and set(loaded.field) == {"number", "person"}
    assert set(loaded.linguistics_term) == {"subject-verb agreement"} and set(loaded.lang) == {"xx"}
    assert corpus.pair_file_sentences(out) == {corpus.dedup_key(s) for s in [*built.pairs.sen, *built.pairs.wrong_sen]}


def _rows(values: dict) -> list[dict]:
    return [{"phenomenon": ph, "grammatical_feature": v, "sen": f"{ph} {v} {i}", "wrong_sen": f"x {i}"}
            for (ph, v), n in values.items() for i in range(n)]


def test_balance_caps_each_value_and_is_deterministic():
    rows = _rows({("SV-#", "Sing"): 10, ("SV-#", "Plur"): 3, ("SV-P", "3"): 8, ("SV-P", "1"): 2, ("SV-P", "2"): 1,
                  ("SP-G", "Fem"): 5})
    kept = ud_pairs.balance(rows, seed=1)
    found = pd.DataFrame(kept).groupby(["phenomenon", "grammatical_feature"]).size().to_dict()
    assert found == {("SV-#", "Sing"): 3, ("SV-#", "Plur"): 3, ("SV-P", "3"): 3, ("SV-P", "1"): 2,
                     ("SV-P", "2"): 1}  # a phenomenon with one value cannot be balanced: dropped
    assert kept == ud_pairs.balance(rows, seed=1)  # same seed, same rows, in input order
    assert [rows.index(r) for r in kept] == sorted(rows.index(r) for r in kept)
    assert ud_pairs.balance(rows, seed=1) != ud_pairs.balance(rows, seed=2)
    assert len(ud_pairs.balance(rows, max_share=1.0)) == len(rows)
    assert pd.DataFrame(ud_pairs.balance(rows, max_share=0.75)).groupby("grammatical_feature").size()["Sing"] == 9


# ---------------------------------------------------------------- command line and data folder

def test_build_pairs_command(tmp_path, unimorph, capsys):
    (tmp_path / "x.conllu").write_text(conllu(dog()))
    out = tmp_path / "pairs" / "data.tsv"
    code = cli.main(["build-pairs", "--lang", "xx", "--out", str(out), "--unimorph", str(unimorph),
                     "--max-share", "1", str(tmp_path / "x.conllu")])
    printed = capsys.readouterr().out
    assert code == 0 and "3 pairs from 1 sentences" in printed and "SV-#: 1" in printed and "SP-G: 0" in printed
    assert len(pair_sources.load_multiblimp_local(out)) == 3
    assert cli.main(["build-pairs", "--lang", "xx", "--out", str(out), str(tmp_path / "missing.conllu")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "missing.conllu" in err
    (tmp_path / "bad.conllu").write_text("1\tdog\n\n")
    assert cli.main(["build-pairs", "--lang", "xx", "--out", str(out), str(tmp_path / "bad.conllu")]) == 2
    assert "bad.conllu, line 1" in capsys.readouterr().err


def test_heldout_files_by_treebank_never_oldtrain(tmp_path):
    for rel in ["UD_Estonian-EDT/et_edt-ud-test.conllu.gz", "UD_Estonian-EDT/et_edt-ud-dev.conllu.gz",
                "UD_Estonian-EWT/et_ewt-ud-dev.conllu.gz", "UD_Estonian-EWT/et_ewt-ud-train.conllu.gz",
                "UD_Klingon-X/tlh-ud-test.conllu.gz", "oldtrain/et-ud-train.old.conllu.gz"]:
        (tmp_path / "ud" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "ud" / rel).write_bytes(b"")
    assert [f.name for f in ud_pairs.heldout_files(tmp_path, "estonian")] == \
        ["et_edt-ud-test.conllu.gz", "et_ewt-ud-dev.conllu.gz"]
    assert "et-ud-train.old.conllu.gz" not in [f.name for f in ud_pairs.lexicon_files(tmp_path, "est")]
    assert ud_pairs.heldout_files(tmp_path, "fao") == [] and set(ud_pairs.treebanks(tmp_path)) == {"est"}


@pytest.fixture(scope="module")
def real_pairs():
    from conftest import shared_data

    data_dir = shared_data()
    if not (data_dir / "ud").is_dir():
        pytest.skip(f"real UD treebanks not found at {data_dir / 'ud'}: set HYPERLLAMA_DATA")
    return data_dir, {lang: ud_pairs.build_language(data_dir, lang) for lang in
                      ["eng", "est", "fao", "isl", "fas", "swe"]}


def test_real_treebanks_give_pairs_from_heldout_files_only(real_pairs):
    data_dir, built = real_pairs
    oldtrain = {f.name for f in (data_dir / "ud" / "oldtrain").glob("*.conllu.gz")}
    for lang, b in built.items():
        assert len(b.pairs) > 0, lang
        heldout = {f.name for f in ud_pairs.heldout_files(data_dir, lang)}
        files = {json.loads(m)["file"] for m in b.pairs.metadata}
        assert files <= heldout and not files & oldtrain, lang
        assert all(name.endswith(("-test.conllu.gz", "-dev.conllu.gz")) for name in heldout)
        assert (b.pairs.sen != b.pairs.wrong_sen).all() and b.pairs.wrong_verb.str.strip().str.count(" ").eq(0).all()
    for lang in ("est", "isl", "fas"):
        assert len(built[lang].pairs) >= 500, lang


def test_eval_takes_released_files_then_the_hub_or_the_built_pairs(tmp_path, unimorph, monkeypatch):
    from hyperllama_lib.evaluation import benchmarks
    from hyperllama_lib.params import load_params
    from hyperllama_lib.pipeline import data, layout

    def multiblimp_sources(p):
        loaded = benchmarks.load_multiblimp(benchmarks.Context(layout.of(p).data, p, log=lambda m: None))
        return {lang: source for lang, (_, source) in loaded.items()}

    built = build(tmp_path, unimorph, conllu(dog()))
    released = tmp_path / "released"
    released.mkdir()
    p = load_params("smoke", {"run_dir": str(tmp_path / "run"), "multiblimp_dir": str(released)}, need_data=False)
    for lang in ("est", "fao"):
        ud_pairs.write_data_tsv(built.pairs.assign(lang=lang), layout.of(p).data.multiblimp(lang))
    ud_pairs.write_data_tsv(built.pairs.assign(lang="est"), released / "est" / "data.tsv")
    assert multiblimp_sources(p) == {"est": "released", "fao": "built"}
    assert data.multiblimp_files(p, "est") == [layout.of(p).data.multiblimp("est"), released / "est" / "data.tsv"]

    # eval_source: hub takes the Hub's file where multiblimp_dir has none; a failure there stops, no fallback
    offline = {"eng"}

    def hub(lang, **kw):
        if lang in offline:
            raise DataError(f"cannot fetch {lang}/data.tsv of the dataset jumelet/multiblimp from the Hub (offline)")
        return pair_sources.load_multiblimp_local(released / "est" / "data.tsv", lang=lang, **kw)
    monkeypatch.setattr(pair_sources, "load_multiblimp_hub", hub)
    p = load_params("smoke", {"run_dir": str(tmp_path / "run"), "multiblimp_dir": str(released),
                              "eval_source": "hub"}, need_data=False)
    with pytest.raises(DataError, match="eng/data.tsv"):
        multiblimp_sources(p)
    offline.clear()
    assert multiblimp_sources(p) == {lang: "released" for lang in ["eng", *p.langs]}
    # a hub data source alone fetches no evaluation set: eval_source decides
    p = load_params("smoke", {"run_dir": str(tmp_path / "run"), "data_source": "hub"}, need_data=False)
    assert multiblimp_sources(p) == {"est": "built", "fao": "built"}


def test_no_treebank_gives_an_empty_counts_table(tmp_path):
    from hyperllama_lib.params import load_params
    from hyperllama_lib.pipeline import data, layout

    p = load_params("smoke", {"run_dir": str(tmp_path / "run"), "data_dir": str(tmp_path)}, need_data=False)
    written = data.build_multiblimp(p, layout.of(p).data, log=lambda m: None)
    assert written == [layout.of(p).data.multiblimp_counts, layout.of(p).data.multiblimp_counts.with_suffix(".md")]
    assert data.load_multiblimp_counts(p).empty and not layout.of(p).data.multiblimp("est").exists()


def test_counts_against_the_released_multiblimp(real_pairs):
    _, built = real_pairs
    table = ud_pairs.counts_against_released(built).set_index("lang")
    assert table.loc["eng", "multiblimp_1_0"] == 770 and table.loc["swe", "multiblimp_1_0"] == 201
    assert (table.built <= table.before_balancing).all() and (table.built > 0).all()


def test_recovers_the_released_english_pairs_from_our_treebanks():
    """MultiBLiMP 1.0's eng/data.tsv is not ours to ship: give its path in HYPERLLAMA_MULTIBLIMP_ENG."""
    import os

    from conftest import shared_data

    released = os.environ.get("HYPERLLAMA_MULTIBLIMP_ENG")
    if not released or not os.path.isfile(released):
        pytest.skip("the released MultiBLiMP 1.0 English data.tsv is not here: set HYPERLLAMA_MULTIBLIMP_ENG")
    data_dir = shared_data()
    files = ud_pairs.lexicon_files(data_dir, "eng")
    if not files:
        pytest.skip(f"no English UD treebanks at {data_dir / 'ud'}: set HYPERLLAMA_DATA")
    ours = ud_pairs.build_pairs(files, "eng", ud_pairs.unimorph_file(data_dir, "eng"), files, max_share=1.0)
    found, total = ud_pairs.recovered_share(pd.read_csv(released, sep="\t"), ours.pairs, files)
    assert total > 0 and found / total >= 0.6, (found, total)


def test_recovered_share_matches_ids_and_ignores_whitespace():
    released = pd.DataFrame({"wrong_sen": ["Yes, am n't she?", "They is .", "He are ."],
                             "metadata": [repr({"sent_id": "a", "treebank": "UD_English-X/x.conllu"}),
                                          repr({"sent_id": "b", "treebank": "UD_English-X/x.conllu"}),
                                          repr({"sent_id": "c", "treebank": "UD_English-Y/other.conllu"})]})
    ours = pd.DataFrame({"wrong_sen": ["Yes, amn't she?"], "metadata": [json.dumps({"sent_id": "a"})]})
    assert ud_pairs.recovered_share(released, ours, ["/d/x.conllu.gz"]) == (1, 2)
