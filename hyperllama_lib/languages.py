"""The paper's languages: ISO 639-3 codes, names, and their Hub subsets."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ParamError


@dataclass(frozen=True)
class Language:
    code: str  # ISO 639-3, as in MultiBLiMP and the paper's merge files
    name: str
    fineweb2_subset: str | None  # HuggingFaceFW/fineweb-2 config name; None for English


LANGUAGES: dict[str, Language] = {
    lang.code: lang
    for lang in [
        Language("eng", "english", None),
        Language("est", "estonian", "ekk_Latn"),
        Language("fao", "faroese", "fao_Latn"),
        Language("isl", "icelandic", "isl_Latn"),
        Language("fas", "persian", "fas_Arab"),
        Language("swe", "swedish", "swe_Latn"),
    ]
}
TARGET_LANGUAGES = ("est", "fao", "isl", "fas", "swe")  # the five adaptation targets
ENGLISH = "eng"
MULTILINGUAL = "multilingual"  # the jointly trained model over all target languages
_BY_NAME = {lang.name: lang.code for lang in LANGUAGES.values()}


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


def name(code: str) -> str:
    return LANGUAGES[code].name
