from __future__ import annotations

import base64
import io
import math
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader
from hypothesis import given, settings
from hypothesis import strategies as st

from brownout.errors import InvalidConfig, ResultsError
from brownout.results import HOUR_US, Histogram, LogInterval, _hdr, write_interval_log

PERCENTILES = [0, 1, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.99, 100]


@pytest.fixture(params=["numpy", "plain"])
def paths(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with numpy acceleration and with the plain-Python code paths."""
    if request.param == "plain":
        monkeypatch.setattr(_hdr, "optional_numpy", lambda: None)
    return str(request.param)


def truth_at(sorted_values: list[int], p: float) -> int:
    """The recorded value of rank max(1, ceil(p/100 * n)), computed exactly."""
    n = len(sorted_values)
    rank = max(1, math.ceil(Fraction(repr(float(p))) * n / 100))
    return sorted_values[rank - 1]


def fill(hist: Histogram, values: np.ndarray) -> Histogram:
    """Record with the plain loop (works whichever code path is active)."""
    for value in values.tolist():
        hist.record(value)
    return hist


def lognormal_us(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.lognormal(mean=9.0, sigma=1.5, size=n).astype(np.int64)


# -- layout --------------------------------------------------------------------------------------


def test_default_layout_is_hdrhistograms_3_digits_over_an_hour() -> None:
    hist = Histogram()
    assert hist.highest_trackable_value == HOUR_US == 3_600_000_000
    assert hist.significant_digits == 3
    assert hist.lowest_discernible_value == 1
    # 2048 sub-buckets, 22 buckets: (22 + 1) * 1024 counters, as REFERENCES.md says (~23.5k).
    assert hist.layout.length == 23_552
    assert Histogram(significant_digits=2).layout.length == 3_328


@pytest.mark.parametrize("digits", [1, 2, 3, 4, 5])
def test_layout_matches_the_hdrhistogram_package(digits: int) -> None:
    ours = Histogram(10_000_000, digits)
    theirs = HdrHistogram(1, 10_000_000, digits)
    assert ours.layout.length == theirs.counts_len
    for value in [0, 1, 2, 1000, 2047, 2048, 2049, 123_456, 9_999_999]:
        i = ours.layout.index(value)
        assert i == theirs._counts_index_for(value)
        assert ours.layout.lowest_at(i) == theirs.get_lowest_equivalent_value(value)
        assert ours.layout.highest_at(i) == theirs.get_highest_equivalent_value(value)


@pytest.mark.parametrize(
    ("highest", "digits"),
    [(1, 3), (2**53 + 1, 3), (1000, 0), (1000, 6), (True, 3), (1000, 2.0), (10.5, 3)],
)
def test_bad_layout_is_refused_naming_the_argument(highest: object, digits: object) -> None:
    with pytest.raises(InvalidConfig, match=r"highest_trackable_value|significant_digits"):
        Histogram(highest, digits)  # type: ignore[arg-type]


# -- recording -----------------------------------------------------------------------------------


def test_values_above_the_highest_are_clamped_and_counted() -> None:
    hist = Histogram(1000, 3)
    hist.record(5_000)
    hist.record(1000)
    hist.record(2_000_000, count=3)
    assert hist.count == 5
    assert hist.overflow == 4
    assert hist.value_at_percentile(100) == hist.layout.highest_at(hist.layout.index(1000))


def test_values_above_the_highest_are_clamped_by_record_array_too() -> None:
    hist = Histogram(1000, 3)
    hist.record_array(np.array([10, 1001, 10**12], dtype=np.int64))
    assert (hist.count, hist.overflow) == (3, 2)


@pytest.mark.parametrize(("value", "count"), [(-1, 1), (5, 0), (5, -2)])
def test_negative_values_and_counts_below_one_raise(value: int, count: int) -> None:
    with pytest.raises(InvalidConfig):
        Histogram().record(value, count)


def test_record_array_refuses_negative_and_float_values() -> None:
    with pytest.raises(InvalidConfig, match="integers >= 0"):
        Histogram().record_array(np.array([1, -3]))
    with pytest.raises(InvalidConfig, match="integers"):
        Histogram().record_array(np.array([1.5, 2.0]))


def test_record_array_says_how_to_install_numpy_without_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_hdr, "optional_numpy", lambda: None)
    with pytest.raises(ImportError, match=r"brownout\[load\]"):
        Histogram().record_array(np.array([1]))


@settings(max_examples=60)
@given(
    st.lists(st.integers(min_value=0, max_value=2_000_000), max_size=400),
    st.sampled_from([1, 2, 3, 4]),
)
def test_record_array_equals_a_record_loop(values: list[int], digits: int) -> None:
    looped = Histogram(1_000_000, digits)
    for value in values:
        looped.record(value)
    vectorized = Histogram(1_000_000, digits)
    vectorized.record_array(np.array(values, dtype=np.int64))
    assert vectorized == looped
    assert (vectorized.count, vectorized.overflow) == (looped.count, looped.overflow)


def test_record_array_equals_a_record_loop_over_the_whole_range() -> None:
    """Every bucket boundary up to 2**40, where float64 exponents must give bit lengths."""
    values = [0, 1, 2047, 2048]
    for k in range(11, 41):
        values += [2**k - 1, 2**k, 2**k + 1]
    looped = Histogram(2**41, 3)
    for value in values:
        looped.record(value)
    vectorized = Histogram(2**41, 3)
    vectorized.record_array(np.array(values, dtype=np.int64))
    assert vectorized == looped


def test_record_array_handles_batches_larger_than_a_block() -> None:
    values = lognormal_us(3, 3 * _hdr.CHUNK + 17)
    hist = Histogram()
    hist.record_array(values)
    ref = Histogram()
    for value in values.tolist():
        ref.record(value)
    assert hist == ref


def test_record_with_a_count_is_recording_that_many_times() -> None:
    a, b = Histogram(), Histogram()
    a.record(12_345, count=7)
    for _ in range(7):
        b.record(12_345)
    assert a == b


# -- figures -------------------------------------------------------------------------------------


@pytest.mark.parametrize("digits", [2, 3, 4])
@pytest.mark.parametrize("seed", [1, 2])
def test_percentiles_are_within_the_precision_of_numpy_percentiles(
    paths: str, digits: int, seed: int
) -> None:
    values = lognormal_us(seed, 10_007)  # prime: no percentile falls on a rank boundary
    hist = fill(Histogram(HOUR_US, digits), values)
    bound = 10.0**-digits
    for p in [1, 25, 50, 75, 90, 99, 99.9]:
        reference = float(np.percentile(values, p, method="inverted_cdf"))
        got = hist.value_at_percentile(p)
        assert reference <= got <= reference * (1 + bound), (p, got, reference)


@settings(max_examples=80)
@given(
    st.lists(st.integers(min_value=0, max_value=50_000_000), min_size=1, max_size=300),
    st.floats(min_value=0, max_value=100),
)
def test_value_at_percentile_is_the_highest_equivalent_of_the_ranked_value(
    values: list[int], p: float
) -> None:
    hist = Histogram(100_000_000, 3)
    for value in values:
        hist.record(value)
    truth = truth_at(sorted(values), p)
    layout = hist.layout
    expected = (
        layout.lowest_at(layout.index(truth)) if p == 0 else layout.highest_at(layout.index(truth))
    )
    assert hist.value_at_percentile(p) == expected
    assert truth <= hist.value_at_percentile(p) or p == 0
    assert hist.value_at_percentile(p) <= truth * 1.001 + 1


def test_percentile_ranks_use_the_decimal_value_of_p(paths: str) -> None:
    """p(99.9) of 1..1000 is rank 999: float 99.9/100*1000 would say 1000.0000000000001."""
    hist = Histogram()
    for value in range(1, 1001):
        hist.record(value)
    assert hist.value_at_percentile(99.9) == 999
    assert hist.value_at_percentile(50) == 500
    assert hist.value_at_percentile(100) == 1000
    assert hist.value_at_percentile(0) == 1


def test_percentiles_of_a_list_equal_one_at_a_time(paths: str) -> None:
    hist = fill(Histogram(), lognormal_us(5, 5000))
    assert hist.percentiles(PERCENTILES) == [hist.value_at_percentile(p) for p in PERCENTILES]
    assert hist.percentiles([99, 50]) == [
        hist.value_at_percentile(99),
        hist.value_at_percentile(50),
    ]


@pytest.mark.parametrize("p", [-0.1, 100.01, float("nan"), "99", True])
def test_percentile_outside_0_100_is_refused(p: object) -> None:
    hist = Histogram()
    hist.record(1)
    with pytest.raises(InvalidConfig, match="percentile"):
        hist.value_at_percentile(p)  # type: ignore[arg-type]


def test_an_empty_histogram_reads_zero(paths: str) -> None:
    hist = Histogram()
    assert (hist.count, hist.min, hist.max, hist.mean, hist.stddev) == (0, 0, 0, 0.0, 0.0)
    assert hist.percentiles([50, 100]) == [0, 0]


def test_min_max_mean_and_stddev_follow_hdrhistogram(paths: str) -> None:
    values = lognormal_us(7, 20_000)
    ours = fill(Histogram(), values)
    theirs = HdrHistogram(1, HOUR_US, 3)
    for value in values.tolist():
        theirs.record_value(value)
    assert ours.min == theirs.get_min_value()
    assert ours.max == theirs.get_max_value()
    assert ours.mean == pytest.approx(theirs.get_mean_value(), rel=1e-12)
    assert ours.stddev == pytest.approx(theirs.get_stddev(), rel=1e-9)
    # and within the precision of the raw figures
    assert ours.mean == pytest.approx(float(values.mean()), rel=1e-3)
    assert ours.stddev == pytest.approx(float(values.std()), rel=1e-3)
    assert int(values.max()) <= ours.max <= int(values.max()) * 1.001


def test_small_values_are_exact(paths: str) -> None:
    hist = Histogram()
    for value in [0, 0, 3, 7, 2047]:
        hist.record(value)
    assert (hist.min, hist.max) == (0, 2047)
    assert hist.mean == (3 + 7 + 2047) / 5
    assert hist.percentiles([0, 40, 60, 80, 100]) == [0, 0, 3, 7, 2047]


def test_reset_forgets_everything() -> None:
    hist = Histogram(1000)
    hist.record(5000)
    hist.reset()
    assert hist == Histogram(1000)
    assert (hist.count, hist.overflow) == (0, 0)


def test_copy_is_independent() -> None:
    hist = Histogram()
    hist.record(10)
    twin = hist.copy()
    twin.record(20)
    assert (hist.count, twin.count) == (1, 2)


# -- merging -------------------------------------------------------------------------------------


@settings(max_examples=50)
@given(
    st.lists(st.integers(min_value=0, max_value=10**9), max_size=200),
    st.lists(st.integers(min_value=0, max_value=10**9), max_size=200),
)
def test_merge_equals_recording_everything_into_one(a: list[int], b: list[int]) -> None:
    left, right, whole = Histogram(), Histogram(), Histogram()
    for value in a:
        left.record(value)
        whole.record(value)
    for value in b:
        right.record(value)
        whole.record(value)
    left.merge(right)
    assert left == whole
    assert left.count == whole.count
    assert left.percentiles(PERCENTILES) == whole.percentiles(PERCENTILES)


def test_merge_exactness_in_both_code_paths(paths: str) -> None:
    values = lognormal_us(11, 4000)
    parts = [Histogram() for _ in range(4)]
    whole = Histogram()
    for i, value in enumerate(values.tolist()):
        parts[i % 4].record(value)
        whole.record(value)
    merged = Histogram()
    for part in parts:
        merged.merge(part)
    assert merged == whole
    assert merged.mean == whole.mean


def test_merge_into_a_smaller_highest_clamps_and_counts_overflow(paths: str) -> None:
    values = [5, 900, 70_000, 5_000_000]
    big = Histogram(10**9, 3)
    for value in values:
        big.record(value)
    small = Histogram(100_000, 3)
    small.merge(big)
    expected = Histogram(100_000, 3)
    for value in values:
        expected.record(value)
    assert small == expected
    assert small.overflow == 1


def test_merge_into_a_larger_highest_is_exact(paths: str) -> None:
    small = Histogram(100_000, 3)
    for value in [5, 900, 70_000, 100_000]:
        small.record(value)
    big = Histogram(10**9, 3)
    big.merge(small)
    assert big.percentiles(PERCENTILES) == small.percentiles(PERCENTILES)
    assert big.count == small.count


def test_merge_with_other_digits_rebuckets_within_the_coarser_precision() -> None:
    values = lognormal_us(13, 5000)
    coarse = Histogram(HOUR_US, 2)
    coarse.record_array(values)
    fine = Histogram(HOUR_US, 3)
    fine.merge(coarse)
    assert fine.count == coarse.count
    ordered = sorted(values.tolist())
    for p in [50, 90, 99]:
        truth = truth_at(ordered, p)
        assert fine.value_at_percentile(p) == pytest.approx(truth, rel=0.011)


def test_merge_with_itself_doubles() -> None:
    hist = Histogram()
    hist.record(42, 3)
    hist.merge(hist)
    assert hist.count == 6
    assert hist.percentiles([100]) == [42]


# -- encoding ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [[], [0], [1], [7, 7, 7, 2047, 2048, 10**6], lognormal_us(17, 3000).tolist()],
    ids=["empty", "zero", "one", "few", "many"],
)
def test_encode_decode_round_trip(paths: str, values: list[int]) -> None:
    hist = Histogram()
    for value in values:
        hist.record(value)
    text = hist.encode()
    assert text.startswith("HISTFAAA")
    back = Histogram.decode(text)
    assert back == hist
    assert back.count == hist.count
    assert back.percentiles(PERCENTILES) == hist.percentiles(PERCENTILES)


def test_both_code_paths_write_the_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    hist = Histogram()
    hist.record_array(lognormal_us(19, 5000))
    hist.record(3, count=2**60)  # a 9-byte varint
    fast = hist.encode()
    monkeypatch.setattr(_hdr, "optional_numpy", lambda: None)
    assert hist.encode() == fast
    assert Histogram.decode(fast) == hist


def test_huge_counts_round_trip_through_nine_byte_varints(paths: str) -> None:
    hist = Histogram()
    hist.record(3, count=2**62)
    hist.record(1_000_000, count=2**57 + 5)
    back = Histogram.decode(hist.encode())
    assert back == hist
    assert back.count == 2**62 + 2**57 + 5


def _payload(text: str) -> bytes:
    blob = base64.b64decode(text)
    cookie, length = struct.unpack(">Ii", blob[:8])
    assert cookie == 0x1C849314
    return zlib.decompress(blob[8 : 8 + length])


def test_payload_is_the_v2_layout_written_by_hand() -> None:
    """Values 1, 3, 3, 100: counts [0, 1, 0, 2, 0 x 96, 1]. A lone empty bucket is written as
    count 0 and a run of n >= 2 as -n (HdrHistogram's Java encoder does the same), ZigZag
    then LEB128: 0, 1, 0, 2, -96, 1 -> 00 02 00 04 bf01 02."""
    hist = Histogram()
    for value in [1, 3, 3, 100]:
        hist.record(value)
    body = bytes([0x00, 0x02, 0x00, 0x04, 0xBF, 0x01, 0x02])
    header = struct.pack(">Iiiiqqd", 0x1C849313, len(body), 0, 3, 1, HOUR_US, 1.0)
    assert _payload(hist.encode()) == header + body


def test_payload_header_matches_the_hdrhistogram_package() -> None:
    ours = Histogram(HOUR_US, 3)
    theirs = HdrHistogram(1, HOUR_US, 3)
    for value in lognormal_us(23, 2000).tolist():
        ours.record(value)
        theirs.record_value(value)
    mine, other = _payload(ours.encode()), _payload(theirs.encode().decode())
    # same cookie, offset, digits, lowest, highest and ratio; the body length differs only
    # because that package writes a lone empty bucket as -1 where Java writes 0
    assert mine[:4] + mine[8:40] == other[:4] + other[8:40]


@pytest.mark.parametrize("digits", [2, 3, 4])
def test_the_hdrhistogram_package_decodes_ours(paths: str, digits: int) -> None:
    values = lognormal_us(29, 10_000)
    ours = fill(Histogram(HOUR_US, digits), values)
    theirs = HdrHistogram.decode(ours.encode())
    assert theirs.get_total_count() == ours.count
    assert theirs.get_min_value() == ours.min
    assert theirs.get_max_value() == ours.max
    assert theirs.get_mean_value() == pytest.approx(ours.mean, rel=1e-12)
    # p * count / 100 is a whole number here: their round-half-up rank equals our ceiling
    for p in [10, 50, 90, 99, 99.9, 99.99, 100]:
        assert theirs.get_value_at_percentile(p) == ours.value_at_percentile(p), p


def test_we_decode_the_hdrhistogram_packages_encoding(paths: str) -> None:
    values = lognormal_us(31, 10_000).tolist()
    theirs = HdrHistogram(1, HOUR_US, 3)
    expected = Histogram()
    for value in values:
        theirs.record_value(value)
        expected.record(value)
    ours = Histogram.decode(theirs.encode())
    assert ours == expected
    for p in [10, 50, 90, 99, 99.9, 100]:
        assert ours.value_at_percentile(p) == theirs.get_value_at_percentile(p)


def test_decoding_an_uncompressed_v2_payload() -> None:
    hist = Histogram()
    hist.record_array(lognormal_us(37, 100))
    raw = base64.b64encode(_payload(hist.encode())).decode()
    assert Histogram.decode(raw) == hist


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("not base64 !!", "not valid base64"),
        ("", "too short"),
        (base64.b64encode(b"\x00" * 12).decode(), "is not V2"),
        (
            base64.b64encode(struct.pack(">Ii", 0x1C849314, 50) + b"xx").decode(),
            "compressed length",
        ),
        (base64.b64encode(struct.pack(">Ii", 0x1C849314, 2) + b"xx").decode(), "does not inflate"),
    ],
)
def test_corrupt_encodings_raise_one_clear_error(text: str, match: str) -> None:
    with pytest.raises(ResultsError, match=match) as info:
        Histogram.decode(text)
    assert "histogram=" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_histogram_with_another_lowest_value_is_refused() -> None:
    theirs = HdrHistogram(1000, HOUR_US, 3)
    theirs.record_value(5000)
    with pytest.raises(ResultsError, match="lowest value 1"):
        Histogram.decode(theirs.encode())


def test_counts_beyond_the_layout_are_refused(paths: str) -> None:
    small = Histogram(3000, 3)
    big = Histogram(10**6, 3)
    big.record(10**6)
    header = struct.pack(">Iiiiqqd", 0x1C849313, 0, 0, 3, 1, 3000, 1.0)
    body = _payload(big.encode())[40:]
    header = header[:4] + struct.pack(">i", len(body)) + header[8:]
    text = base64.b64encode(header + body).decode()
    with pytest.raises(ResultsError, match="corrupt"):
        Histogram.decode(text)
    assert small.count == 0


# -- interval log --------------------------------------------------------------------------------


def test_interval_log_is_read_by_the_hdrhistogram_package(tmp_path: Path) -> None:
    hists = []
    for seed in range(3):
        hist = Histogram()
        hist.record_array(lognormal_us(seed + 40, 1000))
        hists.append(hist)
    buffer = io.StringIO()
    written = write_interval_log(
        buffer,
        [
            LogInterval(0.0, 1.0, hists[0], "response"),
            LogInterval(1.0, 1.0, hists[1], "response"),
            (2.0, 0.5, hists[2]),
        ],
        start_time_s=1_700_000_000.0,
    )
    assert written == 3
    text = buffer.getvalue()
    assert text.startswith("#[Histogram log format version 1.3]\n")
    assert "#[StartTime: 1700000000.000 (seconds since epoch), 2023-11-14T22:13:20+00:00]" in text
    lines = text.splitlines()
    assert lines[4].startswith("Tag=response,0.000,1.000,")
    assert lines[6].startswith("2.000,0.500,")
    path = tmp_path / "run.hlog"
    path.write_text(text)
    reader = HistogramLogReader(str(path), HdrHistogram(1, HOUR_US, 3))
    seen = []
    while (interval := reader.get_next_interval_histogram()) is not None:
        seen.append(interval)
    reader.close()
    assert len(seen) == 3
    for theirs, ours in zip(seen, hists, strict=True):
        assert theirs.get_total_count() == ours.count
        assert theirs.get_value_at_percentile(99) == ours.value_at_percentile(99)
    assert seen[0].get_tag() == "response"
    assert seen[1].get_start_time_stamp() == pytest.approx((1_700_000_000.0 + 1.0) * 1000)
    # the max column is the interval's max in milliseconds
    assert float(lines[4].split(",")[3]) == pytest.approx(hists[0].max / 1000, abs=0.001)


@pytest.mark.parametrize("tag", ["", "a,b", "with space"])
def test_interval_log_refuses_tags_that_break_the_format(tag: str) -> None:
    with pytest.raises(InvalidConfig, match="tag"):
        write_interval_log(io.StringIO(), [LogInterval(0, 1, Histogram(), tag)])
