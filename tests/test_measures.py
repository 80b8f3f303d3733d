"""convviz_check.measures.spearman is the package's one Spearman: scipy's on every
input scipy defines (average ranks for ties), and defined where scipy is not."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from convviz_check.measures import spearman

# Cell values on a coarse grid: many exact ties, and distinct values far apart compared
# with RANK_RESOLUTION (1e-6 of the largest), so scipy and measures see the same ties.
grid = st.integers(0, 6).map(lambda k: k / 6)
pairs = st.integers(2, 40).flatmap(
    lambda n: st.tuples(arrays(np.float64, n, elements=grid), arrays(np.float64, n, elements=grid))
)


@given(pairs)
def test_spearman_is_scipys_with_average_ranks_for_ties(pair):
    a, b = pair
    if np.ptp(a) == 0 or np.ptp(b) == 0:  # scipy: undefined (NaN)
        assert spearman(a, b) == (1.0 if np.ptp(a) == np.ptp(b) == 0 else 0.0)
        return
    assert spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a, b).statistic, abs=1e-12)


def test_spearman_hand_value_with_ties():
    # ranks of [0, 0, 0, 1] are [2, 2, 2, 4] (average of 1, 2, 3), of [0, .1, .2, 1]
    # [1, 2, 3, 4]: centred [-.5, -.5, -.5, 1.5] . [-1.5, -.5, .5, 1.5] = 3,
    # norms sqrt(3) and sqrt(5): rho = 3 / sqrt(15).
    a, b = np.array([0.0, 0.0, 0.0, 1.0]), np.array([0.0, 0.1, 0.2, 1.0])
    assert spearman(a, b) == pytest.approx(3 / np.sqrt(15))
    assert spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a, b).statistic)
