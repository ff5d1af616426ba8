"""The paper's languages: ISO 639-3 codes, names, and their Hub subsets."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ParamError


@dataclass(frozen=True)
class Language:
    code: str  # ISO 639-3, as in MultiBLiMP and the paper's merge files
    name: str
    fineweb2_subset: str | None  # HuggingFaceFW/fineweb-2 config name; None for English
    iso1: str  # ISO 639-1, as in mParaRel and most Hub dataset cards


LANGUAGES: dict[str, Language] = {
    lang.code: lang
    for lang in [
        Language("eng", "english", None, "en"),
        Language("est", "estonian", "ekk_Latn", "et"),
        Language("fao", "faroese", "fao_Latn", "fo"),
        Language("isl", "icelandic", "isl_Latn", "is"),
        Language("fas", "persian", "fas_Arab", "fa"),
        Language("swe", "swedish", "swe_Latn", "sv"),
    ]
}
TARGET_LANGUAGES = ("est", "fao", "isl", "fas", "swe")  # the five adaptation targets
ENGLISH = "eng"
MULTILINGUAL = "multilingual"  # the jointly trained model over all target languages
EACH = "each"  # 03_cpt: one model per target language of the run, one after another (one notebook job)
_BY_NAME = {lang.name: lang.code for lang in LANGUAGES.values()}
# other labels datasets use for our languages: ISO 639-1, and the individual-language ISO 639-3 codes of
# Standard Estonian and Iranian Persian (FineWeb-2's ekk_Latn; pes)
_BY_LABEL = {**_BY_NAME, **{lang.iso1: lang.code for lang in LANGUAGES.values()}, "ekk": "est", "pes": "fas"}


def valid_choices() -> str:
    return ", ".join(f"{c} ({LANGUAGES[c].name})" for c in LANGUAGES)


def to_code(lang: str, allow_multilingual: bool = False) -> str:
    """Map an ISO code or an English name (any case) to the ISO code; one-line error otherwise."""
    key = str(lang).strip().lower()
    if allow_multilingual and key == MULTILINGUAL:
        return MULTILINGUAL
    if key in LANGUAGES:
        return key
    if key in _BY_NAME:
        return _BY_NAME[key]
    extra = f", {MULTILINGUAL}" if allow_multilingual else ""
    raise ParamError(f"unknown language {lang!r}; valid choices: {valid_choices()}{extra}")


def from_label(label: object) -> str | None:
    """Our code for a language label of a dataset (ISO 639-3 or 639-1, an English name, optionally with a
    script or region such as "swe_Latn" or "en-US"), any case; None for a language that is not ours."""
    key = str(label).strip().lower().replace("-", "_")
    for candidate in (key, key.partition("_")[0]):
        if candidate in LANGUAGES:
            return candidate
        if candidate in _BY_LABEL:
            return _BY_LABEL[candidate]
    return None


def name(code: str) -> str:
    return LANGUAGES[code].name
