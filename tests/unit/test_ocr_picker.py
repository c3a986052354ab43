"""The learned line picker: shipped weights, numpy inference, training on a toy problem."""

from datetime import date
from decimal import Decimal

import numpy as np

from extractor.ocr.parser import Candidate, parse_receipt, total_candidates
from extractor.ocr.picker import FIELDS, LinePicker, best, load_default_picker, softmax
from extractor.ocr.train_picker import fit_scorer
from tests.unit.test_ocr_parser import RECEIPT, lines_from_text


def test_shipped_weights_load_and_cover_every_field():
    picker = load_default_picker()
    assert picker is not None and set(picker.scorers) == set(FIELDS)
    for scorer in picker.scorers.values():
        assert len(scorer.names) == scorer.W1.shape[0] == len(scorer.mean) == len(scorer.wl)
    again = LinePicker.from_json(picker.to_json())
    feats = [{"bias": 1.0, "kw_date": 1.0}, {"bias": 1.0}]
    assert np.allclose(again.scorers["date"].scores(feats), picker.scorers["date"].scores(feats))


def test_shipped_picker_reads_the_fixture_receipt():
    parsed = parse_receipt(lines_from_text(RECEIPT), picker=load_default_picker())
    v = parsed.values
    assert v["store_name"] == "INDAH GIFT & HOME DECO SDN BHD"
    assert v["store_address"] == "27, JALAN DEDAP 13, TAMAN JOHOR JAYA, 81100 JOHOR BAHRU, JOHOR."
    assert v["date"] == date(2018, 10, 19)
    assert v["total"] == Decimal("60.30")  # the rounded total, not TOTAL AMT 60.31
    assert all(0 < parsed.confidence[f] <= 1 for f in FIELDS)


def test_fit_scorer_learns_which_candidate_is_right():
    rng = np.random.default_rng(0)
    groups = []
    for _ in range(60):  # 5 candidates per receipt; the right one has a high "signal"
        feats = [{"signal": float(rng.normal()), "noise": float(rng.normal())} for _ in range(5)]
        right = int(np.argmax([f["signal"] for f in feats]))
        groups.append((feats, np.arange(5) == right))
    scorer = fit_scorer(groups, hidden=4, epochs=150)
    test = [{"signal": 0.1, "noise": 3.0}, {"signal": 2.0, "noise": -1.0}, {"signal": -1.0, "noise": 0.0}]
    cands = [Candidate(value=i, line=0, text=str(i), extra={"features": f}) for i, f in enumerate(test)]
    chosen, prob = best(scorer, cands)
    assert chosen.value == 1 and prob > 0.5
    assert best(scorer, []) == (None, 0.0)


def test_an_ensemble_scorer_scores_the_mean_of_its_members():
    rng = np.random.default_rng(1)
    groups = []
    for _ in range(40):
        feats = [{"signal": float(rng.normal()), "noise": float(rng.normal())} for _ in range(4)]
        groups.append((feats, np.arange(4) == int(np.argmax([f["signal"] for f in feats]))))
    members = [fit_scorer(groups, hidden=3, epochs=40, seed=s) for s in (5, 6, 7)]
    ensemble = fit_scorer(groups, hidden=3, epochs=40, seed=5, members=3)
    probe = [{"signal": 0.3, "noise": -2.0}, {"signal": -0.4, "noise": 1.5}]
    assert ensemble.W1.shape == (2, 9)
    np.testing.assert_allclose(ensemble.scores(probe), np.mean([m.scores(probe) for m in members], axis=0),
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(members[0].scores(probe), members[1].scores(probe))  # the seeds differ


def test_a_value_found_on_several_candidates_gets_their_summed_probability():
    """The same answer on several candidates (a total on SUBTOTAL and TOTAL lines, a store name
    as a span and as its trimmed variant) splits the softmax mass; the value decodes add it up."""
    scorer = fit_scorer([([{"s": 1.0}, {"s": 0.0}], np.array([True, False]))] * 20, hidden=2, epochs=50)
    feats = [{"s": 0.9}, {"s": 0.8}, {"s": 0.8}, {"s": 0.1}]
    cands = [Candidate(value=v, line=i, text=str(v), extra={"features": f})
             for i, (v, f) in enumerate(zip([Decimal("9.00"), Decimal("5.00"), Decimal("5.00"), Decimal("1.00")],
                                            feats, strict=True))]
    top, p_top = best(scorer, cands)
    assert top.value == Decimal("9.00")
    same, p_same = best(scorer, cands, "value-confidence")
    assert same is top and p_same == p_top  # a value found once: its own probability
    chosen, mass = best(scorer, cands, "value")
    p = softmax(scorer.scores(feats))
    assert p[1] + p[2] > p[0] > p[1]  # one 9.00 beats each 5.00, but not both
    assert chosen.value == Decimal("5.00") and chosen.line == 1 and np.isclose(mass, p[1] + p[2])
    names = [Candidate(value=v, line=0, text=v, extra={"features": {"s": 0.5}})
             for v in ("ABC SDN. BHD.", "abc sdn bhd", "ABC")]
    assert np.isclose(best(scorer, names, "value-confidence")[1], 2 / 3)  # case and punctuation aside


def test_an_amount_tendered_is_not_offered_as_the_total():
    """A pay station prints the money it took as "Accepted total" just above CHANGE: that
    amount less the change is another amount of the page (the one charged), so it is the
    customer's money, not the total, whatever its label says (parser-v7)."""
    from extractor.ocr import features
    from extractor.ocr.picker import Scorer

    lines = lines_from_text("CITY PARKING SDN BHD\nTAX INVOICE\n03/07/18 14:02\nParking fee   3.00 RM\n"
                            "Amount Incl. GST   3.00 RM\nAccepted total   5.00 RM\nChange   2.00 RM\n"
                            "GST 6%   0.17 RM\nThank you\n")
    page = features.Page.of(lines)
    totals = total_candidates(lines)
    assert [str(c.value) for c in features.tendered(page, totals)] == ["5.00"]
    assert "5.00" not in {str(c.value) for c in features.offered_totals(page, totals)}
    shipped = load_default_picker()
    assert parse_receipt(lines, picker=shipped).values["total"] == Decimal("3.00")
    # a total scorer that takes the largest amount (as a picker leaning on "total" labels and
    # rank would, for a store it never saw) would read the 5.00 tendered; the rule stops it
    largest = Scorer(names=["log_value"], mean=np.zeros(1), std=np.ones(1), W1=np.zeros((1, 1)),
                     b1=np.zeros(1), w2=np.zeros(1), wl=np.array([10.0]))
    picker = LinePicker({**shipped.scorers, "total": largest})
    assert parse_receipt(lines, picker=picker).values["total"] == Decimal("3.00")


def test_an_amount_paid_exactly_may_still_be_the_total():
    """No change given (or none printed below the payment): nothing is ruled out."""
    from extractor.ocr import features

    for text in ("SHOP ENTERPRISE\nTOTAL   8.20\nCASH   8.20\nChange   0.00\n",
                 "SHOP ENTERPRISE\nChange   2.00\nTOTAL   3.00\nCASH   5.00\n"):
        lines = lines_from_text(text)
        totals = total_candidates(lines)
        assert features.tendered(features.Page.of(lines), totals) == []
        assert len(features.offered_totals(features.Page.of(lines), totals)) == len(totals)


def test_the_benchs_re_reads_use_the_recogniser_that_made_the_ocr_cache(tmp_path):
    """A cache made with another head or width (``_settings.json``) is re-read by that same
    recogniser, not by the defaults; a cache without the file gets the defaults."""
    import json

    from extractor.ocr.engine import OcrSettings
    from extractor.ocr.train_picker import cache_settings

    (tmp_path / "_settings.json").write_text(json.dumps(
        {"rec_head": "latin", "rec_min_width": 160, "text_score": 0.0, "a_key_of_an_older_version": 1}))
    got = cache_settings(tmp_path)
    assert (got.rec_head, got.rec_min_width, got.text_score) == ("latin", 160, 0.0)
    assert cache_settings(tmp_path / "none") == OcrSettings()
