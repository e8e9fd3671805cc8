"""The 95% Wilson intervals printed beside the reports' rates (qazlm.stats)."""

import pytest

from qazlm.stats import interval_text, wilson


@pytest.mark.parametrize("k, n, low, high", [
    (57, 96, 0.4937388489, 0.6865469783),   # scipy.stats.binomtest(57, 96).proportion_ci(method="wilson")
    (77, 94, 0.7293303792, 0.8839065934),
    (0, 10, 0.0, 0.2775327999),
    (10, 10, 0.7224672001, 1.0),
])
def test_wilson_matches_the_textbook_interval(k, n, low, high):
    assert wilson(k / n, n) == pytest.approx((low, high), abs=1e-9)


def test_interval_text_and_the_cases_without_an_interval():
    assert interval_text(57 / 96, 96) == "[49–69]"
    assert interval_text(0.625, 4) == "[22–91]"      # a win rate with a tie counted as half a win
    assert interval_text(None, 10) == "" and interval_text(0.5, 0) == "" and wilson(0.5, 0) is None


def test_rate_text_is_the_reports_cell():
    from qazlm.stats import rate_text

    assert rate_text(77 / 94, 94) == "81.9% [73–88]" and rate_text(0.5, 0) == "50.0%" and rate_text(None, 9) == "—"
