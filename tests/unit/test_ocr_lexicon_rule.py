"""The rule for what may enter the OCR lexicon (docs/ocr.md, "What may enter the lexicon"):
generic words from outside the scored set (receipt and trade vocabulary, legal-form words,
Malaysian administrative geography), never a store's own name. Checked against sroie-dev,
the set the accuracy is scored on: a lexicon word that appears in exactly one store's name
and in no address there is store-specific unless it is an ordinary dictionary word reviewed
below; a new word of that kind fails this test until someone reviews it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from extractor.ocr.lexicon import LEXICON

SROIE_DEV = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "sroie-dev"
# Reviewed 2026-11-29: English/Malay dictionary words that happen to occur in one store's
# name in sroie-dev (none is a brand or a proper name).
REVIEWED_GENERIC = frozenset("""
BEAUTY BEVERAGE BROTHERS CARE DECO FOODS GIFT HEALTH HEALTHCARE HYPERMARKET INTERNATIONAL
MOTOR NOODLE OF PULAU SEAFOOD SERVICES STORE STORES SUPPLY SYARIKAT
""".split())


def _words(text: str | None) -> set[str]:
    return set(re.sub(r"[^\w\s]", " ", (text or "").upper()).split())


@pytest.mark.skipif(not (SROIE_DEV / "labels").is_dir(), reason="sroie-dev is not on this machine")
def test_no_lexicon_word_is_one_scored_store_s_own_name():
    labels = [json.loads(p.read_text()) for p in (SROIE_DEV / "labels").glob("*.json")]
    stores_of: dict[str, set[str]] = {}
    address_words: set[str] = set()
    for label in labels:
        store = " ".join(sorted(_words(label.get("company"))))
        for word in _words(label.get("company")):
            stores_of.setdefault(word, set()).add(store)
        address_words |= _words(label.get("address"))
    one_store_only = {w for w in LEXICON if len(stores_of.get(w, ())) == 1 and w not in address_words}
    assert one_store_only - REVIEWED_GENERIC == set(), "review these against the rule in docs/ocr.md"
    assert REVIEWED_GENERIC - LEXICON == set()  # the review list holds no stale words
