"""The paired bootstrap behind the report's headline interval: known cases, determinism, speed."""

from __future__ import annotations

import random
import time

import pytest

from gepa_action.stats import BootstrapCI, paired_bootstrap_ci


def test_equal_deltas_give_a_point_interval() -> None:
    ci = paired_bootstrap_ci([0.0, 0.5, 0.25], [0.5, 1.0, 0.75])
    assert ci.mean_delta == ci.low == ci.high == 0.5
    assert ci.excludes_zero


def test_a_single_instance_gives_a_point_interval() -> None:
    ci = paired_bootstrap_ci([0.2], [0.9])
    assert ci.low == ci.high == ci.mean_delta == pytest.approx(0.7)
    assert ci.n == 1


def test_no_change_at_all_is_not_a_gain() -> None:
    ci = paired_bootstrap_ci([1.0, 0.0], [1.0, 0.0])
    assert (ci.low, ci.high, ci.mean_delta) == (0.0, 0.0, 0.0)
    assert not ci.excludes_zero


def test_symmetric_deltas_contain_zero() -> None:
    before = [0.0] * 10 + [1.0] * 10
    after = [1.0] * 10 + [0.0] * 10
    ci = paired_bootstrap_ci(before, after)
    assert ci.mean_delta == 0.0
    assert ci.low < 0 < ci.high
    assert not ci.excludes_zero


def test_clearly_positive_deltas_exclude_zero() -> None:
    before = [0.0] * 30
    after = [1.0] * 25 + [0.0] * 5
    ci = paired_bootstrap_ci(before, after)
    assert ci.low > 0
    assert ci.excludes_zero
    assert ci.low <= ci.mean_delta <= ci.high


def test_clearly_negative_deltas_exclude_zero_on_the_other_side() -> None:
    ci = paired_bootstrap_ci([1.0] * 30, [0.0] * 25 + [1.0] * 5)
    assert ci.high < 0
    assert ci.excludes_zero


def test_same_seed_same_interval_and_the_global_rng_is_untouched() -> None:
    rng = random.Random(7)
    before = [rng.random() for _ in range(50)]
    after = [rng.random() for _ in range(50)]
    random.seed(123)
    expected_global = random.random()
    random.seed(123)
    first = paired_bootstrap_ci(before, after, seed=3)
    assert random.random() == expected_global
    assert paired_bootstrap_ci(before, after, seed=3) == first
    assert paired_bootstrap_ci(before, after, seed=4) != first


def test_to_dict_round_trips() -> None:
    ci = paired_bootstrap_ci([0, 1, 0, 1], [1, 1, 0, 1], resamples=200, confidence=0.9)
    data = ci.to_dict()
    assert set(data) == {"mean_delta", "low", "high", "n", "resamples", "confidence"}
    assert BootstrapCI(**data) == ci
    assert (data["n"], data["resamples"], data["confidence"]) == (4, 200, 0.9)


@pytest.mark.parametrize(
    ("before", "after", "kwargs", "message"),
    [
        ([0.0, 1.0], [1.0], {}, "equal lengths"),
        ([], [], {}, "at least one"),
        ([0.0], [1.0], {"resamples": 0}, "resamples"),
        ([0.0], [1.0], {"confidence": 1.0}, "confidence"),
        ([0.0], [float("nan")], {}, "finite"),
    ],
)
def test_bad_input_is_a_value_error(before: list[float], after: list[float], kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        paired_bootstrap_ci(before, after, **kwargs)


def test_interval_covers_the_true_mean_delta_most_of_the_time() -> None:
    """Draw many samples from a known population; a 95% interval should cover its mean in roughly 95%
    of them (the percentile bootstrap undercovers a little at small n, hence the loose bound)."""
    rng = random.Random(11)
    true_delta = 0.2  # after = 1 with probability 0.6, before with 0.4, independently
    covered = 0
    trials = 60
    for trial in range(trials):
        before = [float(rng.random() < 0.4) for _ in range(40)]
        after = [float(rng.random() < 0.6) for _ in range(40)]
        ci = paired_bootstrap_ci(before, after, resamples=1000, seed=trial)
        covered += ci.low <= true_delta <= ci.high
    assert covered >= 0.85 * trials


def test_wider_confidence_gives_a_wider_interval() -> None:
    rng = random.Random(5)
    before = [rng.random() for _ in range(40)]
    after = [b + rng.uniform(-0.2, 0.4) for b in before]
    narrow = paired_bootstrap_ci(before, after, confidence=0.8)
    wide = paired_bootstrap_ci(before, after, confidence=0.99)
    assert wide.low < narrow.low < narrow.mean_delta < narrow.high < wide.high


def test_three_hundred_instances_ten_thousand_resamples_is_fast() -> None:
    rng = random.Random(2)
    before = [float(rng.random() < 0.5) for _ in range(300)]
    after = [float(rng.random() < 0.7) for _ in range(300)]
    start = time.perf_counter()
    ci = paired_bootstrap_ci(before, after, resamples=10000)
    elapsed = time.perf_counter() - start
    assert ci.low > 0
    assert elapsed < 2.5, f"bootstrap took {elapsed:.2f} s"  # a loose ceiling, with slack for a busy CI machine


