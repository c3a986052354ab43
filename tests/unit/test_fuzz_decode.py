"""Seeded fuzzing of the decoder: mutated files of every allowed container (and some
refused ones) either decode or raise ``BadImageError``; nothing else escapes, and no
reason quotes the file's bytes. 3,000 mutations, ~6 s here; ``bench/fuzz_decode.py``
runs 100,000+ and records the figure (docs/reliability.md)."""

from __future__ import annotations

import random
import warnings
from collections import Counter

import pytest

from extractor.testing.fuzz import ALLOWED_SEEDS, REFUSED_SEEDS, decode_outcome, mutate, seed_files

MUTATIONS = 3000
SEED = 20261129


@pytest.fixture(scope="module")
def seeds() -> dict[str, bytes]:
    return seed_files()


def test_every_seed_is_read_or_refused_as_intended(seeds):
    assert set(seeds) == set(ALLOWED_SEEDS) | set(REFUSED_SEEDS)
    outcomes = {name: decode_outcome(data) for name, data in seeds.items()}
    assert {n for n, o in outcomes.items() if o.status == "decoded"} == set(ALLOWED_SEEDS)
    assert all(outcomes[n].reason.startswith("unsupported format") for n in REFUSED_SEEDS)
    # multi-page containers give one receipt per page
    assert {n: outcomes[n].pages for n in ("TIFF", "GIF", "PDF-text", "PDF-image", "APNG")} == {
        "TIFF": 3, "GIF": 3, "PDF-text": 3, "PDF-image": 2, "APNG": 2}


def test_mutated_files_never_escape_the_decoder(seeds):
    rng = random.Random(SEED)
    names, others = sorted(seeds), list(seeds.values())
    tally: Counter[tuple[str, str]] = Counter()
    escapes, leaky = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns on corrupt EXIF; the outcome is what counts
        for i in range(MUTATIONS):
            name = names[i % len(names)]
            kind, data = mutate(seeds[name], rng, others)
            outcome = decode_outcome(data)
            tally[(name, outcome.status)] += 1
            if outcome.status == "escaped":
                escapes.append((i, name, kind, outcome.reason))
            elif any(leak in outcome.reason for leak in ("b'", 'b"', "root:TOP", " at 0x")):
                leaky.append((i, name, kind, outcome.reason))
    assert escapes == [], f"{len(escapes)} of {MUTATIONS} escaped, e.g. {escapes[:5]}"
    assert leaky == [], f"reasons quoting file bytes or memory addresses: {leaky[:5]}"
    # the mutations reach the decoders: every allowed container both decodes and refuses
    for name in ALLOWED_SEEDS:
        assert tally[(name, "decoded")] > 0 and tally[(name, "refused")] > 0, (name, tally)
