"""HdrHistogram-compatible histograms of integer microseconds, and the HdrHistogram log format.

The bucket layout is HdrHistogram's, with the lowest discernible value fixed at 1. For ``d``
significant digits let ``h = ceil(log2(2 * 10**d)) - 1`` (the sub-bucket half-count
magnitude): bucket 0 holds the values ``0 .. 2**(h+1) - 1`` one by one, and bucket ``b >= 1``
holds ``2**(h+b) .. 2**(h+b+1) - 1`` in ``2**h`` sub-buckets of width ``2**b``. A value ``v``
lands at counts index ``(b << h) + (v >> b)`` with ``b = bit_length(v | (2**(h+1) - 1)) - h - 1``.
Every value in a sub-bucket is "equivalent"; the relative width of a sub-bucket is at most
``2**-h <= 10**-d``, which is the precision every figure read from the histogram has.

Figures follow HdrHistogram's definitions: ``value_at_percentile(p)`` is the highest
equivalent value of the first bucket whose cumulative count reaches ``ceil(p / 100 * count)``
(the lowest equivalent value for ``p == 0``); ``max`` is the highest equivalent value of the
largest recorded value, ``min`` the lowest equivalent value of the smallest; ``mean`` and
``stddev`` weigh each bucket by its median equivalent value ``lowest + width // 2``. Since
they depend on the counts only, a histogram decoded from its encoding, or merged from parts,
gives exactly the figures of the histogram recorded in one piece.

numpy is optional here: ``record_array`` needs it, and when it is installed it speeds up
merging, percentiles, encoding and decoding; everything else is plain Python.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
import zlib
from array import array
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from fractions import Fraction
from types import ModuleType
from typing import IO, Any, NamedTuple

from ..errors import InvalidConfig, ResultsError

__all__ = [
    "HOUR_US",
    "Histogram",
    "LogInterval",
    "write_interval_log",
]

HOUR_US = 3_600_000_000
"""One hour in microseconds: the default highest trackable value."""

_MAX_HIGHEST = 2**53  # values are converted to float64 to find their bit length: exact below 2**53
_ENCODING_COOKIE = 0x1C849313  # V2 payload, word size nibble 0x10 (LEB128 + ZigZag, 9 bytes max)
_COMPRESSED_COOKIE = 0x1C849314  # V2 compressed (deflate) wrapper
_COOKIE_BASE_MASK = ~0xF0 & 0xFFFFFFFF
_PAYLOAD_HEADER = struct.Struct(">Iiiiqqd")
_OUTER_HEADER = struct.Struct(">Ii")
CHUNK = 8192
"""Vectorized work runs in blocks of this many values: small temporaries stay in the
allocator's reuse pool instead of being mapped and unmapped (3x faster on large batches)."""
_INSTALL_HINT = "numpy is needed for this; install it with: pip install 'brownout[load]'"


def optional_numpy() -> ModuleType | None:
    """The numpy module when it is installed, else ``None``."""
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy is installed where the tests run
        return None
    return numpy


def require_numpy() -> ModuleType:
    """The numpy module, or an ImportError that says how to install it."""
    np = optional_numpy()
    if np is None:  # pragma: no cover - numpy is installed where the tests run
        raise ImportError(_INSTALL_HINT)
    return np


class Layout:
    """The bucket layout of a histogram: lowest discernible value 1, ``highest`` and ``digits``.

    Histograms with the same ``digits`` share their index mapping whatever their highest
    value; only the length of the counts array differs.
    """

    __slots__ = ("_tables", "digits", "half_count", "half_mag", "highest", "length", "mask")

    def __init__(self, highest: int, digits: int) -> None:
        self.highest = highest
        self.digits = digits
        largest_single_unit: int = 2 * 10**digits
        sub_bucket_count_mag = (largest_single_unit - 1).bit_length()  # ceil(log2(...))
        self.half_mag = max(sub_bucket_count_mag, 1) - 1
        self.half_count = 1 << self.half_mag
        sub_bucket_count = self.half_count << 1
        self.mask = sub_bucket_count - 1
        buckets = 1
        smallest_untrackable = sub_bucket_count
        while smallest_untrackable <= highest:
            smallest_untrackable <<= 1
            buckets += 1
        self.length = (buckets + 1) * self.half_count
        self._tables: tuple[Any, Any] | None = None

    def same(self, other: Layout) -> bool:
        return self.highest == other.highest and self.digits == other.digits

    def index(self, value: int) -> int:
        """Counts index of ``value`` (0 <= value <= highest)."""
        b = (value | self.mask).bit_length() - self.half_mag - 1
        return (b << self.half_mag) + (value >> b)

    def lowest_at(self, index: int) -> int:
        """Lowest value equivalent to the bucket at ``index``."""
        b = (index >> self.half_mag) - 1
        sub = (index & (self.half_count - 1)) + self.half_count
        if b < 0:
            return sub - self.half_count
        return sub << b

    def width_at(self, index: int) -> int:
        """Number of values equivalent to the bucket at ``index`` (its width)."""
        return 1 << max((index >> self.half_mag) - 1, 0)

    def highest_at(self, index: int) -> int:
        return self.lowest_at(index) + self.width_at(index) - 1

    def median_at(self, index: int) -> int:
        return self.lowest_at(index) + (self.width_at(index) >> 1)

    # -- numpy helpers -------------------------------------------------------------------

    def index_array(self, np: ModuleType, values: Any) -> Any:
        """Counts indices of an int64 array of values in ``0 .. highest`` (vectorized).

        The bit length of ``v | mask`` is the binary exponent of its float64 conversion
        (exact below 2**53), read from the float's exponent bits: ``frexp`` without the
        libm call.
        """
        as_float = (values | self.mask).astype(np.float64)
        b = (as_float.view(np.int64) >> 52) - (1022 + self.half_mag + 1)
        return (b << self.half_mag) + (values >> b)

    def tables(self, np: ModuleType) -> tuple[Any, Any]:
        """(lowest equivalent value, width) of every index, as int64 arrays."""
        if self._tables is None:
            idx = np.arange(self.length, dtype=np.int64)
            b = (idx >> self.half_mag) - 1
            sub = (idx & (self.half_count - 1)) + self.half_count
            low = np.where(b < 0, sub - self.half_count, sub << np.maximum(b, 0))
            width = np.int64(1) << np.maximum(b, 0)
            self._tables = (low, width)
        return self._tables


def check_layout(owner: str, highest: object, digits: object) -> tuple[int, int]:
    if not isinstance(digits, int) or isinstance(digits, bool) or not 1 <= digits <= 5:
        raise InvalidConfig(owner, "significant_digits", digits, "an integer in 1..5")
    if (
        not isinstance(highest, int)
        or isinstance(highest, bool)
        or not 2 <= highest <= _MAX_HIGHEST
    ):
        raise InvalidConfig(owner, "highest_trackable_value", highest, "an integer in 2..2**53")
    return highest, digits


class Histogram:
    """A histogram of integer values (microseconds in brownout) with HdrHistogram's layout.

    ``highest_trackable_value`` (default one hour in microseconds) bounds what is tracked:
    larger values are recorded as ``highest_trackable_value`` and counted in ``overflow``,
    never raised. ``significant_digits`` (1..5, default 3) sets the precision: every figure is
    within a relative ``10**-significant_digits`` of the recorded value it stands for.
    Negative values are a caller's bug and raise ``ValueError``.
    """

    __slots__ = ("_counts", "_layout", "_total", "overflow")

    lowest_discernible_value = 1

    def __init__(self, highest_trackable_value: int = HOUR_US, significant_digits: int = 3) -> None:
        highest, digits = check_layout("Histogram", highest_trackable_value, significant_digits)
        self._layout = Layout(highest, digits)
        self._counts = array("q", bytes(8 * self._layout.length))
        self._total = 0
        self.overflow = 0  # values recorded above the highest trackable value (clamped)

    @classmethod
    def _of_layout(cls, layout: Layout) -> Histogram:
        hist = cls.__new__(cls)
        hist._layout = layout
        hist._counts = array("q", bytes(8 * layout.length))
        hist._total = 0
        hist.overflow = 0
        return hist

    @classmethod
    def from_counts(
        cls,
        counts: Sequence[int] | Any,
        *,
        highest_trackable_value: int = HOUR_US,
        significant_digits: int = 3,
        overflow: int = 0,
    ) -> Histogram:
        """A histogram holding ``counts`` (one per index of the layout; a shorter sequence is
        padded with zeros). Used by :class:`RunRecorder`, which folds many histograms at once."""
        hist = cls(highest_trackable_value, significant_digits)
        n = len(counts)
        if n > hist._layout.length:
            raise InvalidConfig(
                "Histogram", "counts", f"<{n} counts>", f"at most {hist._layout.length} counts"
            )
        np = optional_numpy()
        if np is not None and isinstance(counts, np.ndarray):
            view = np.frombuffer(hist._counts, dtype=np.int64)
            view[:n] = counts
            hist._total = int(counts.sum())
        else:
            for i, c in enumerate(counts):
                hist._counts[i] = c
            hist._total = sum(counts)
        hist.overflow = overflow
        return hist

    # -- layout --------------------------------------------------------------------------

    @property
    def highest_trackable_value(self) -> int:
        return self._layout.highest

    @property
    def significant_digits(self) -> int:
        return self._layout.digits

    @property
    def layout(self) -> Layout:
        return self._layout

    def counts_view(self) -> Any:
        """The counts as a writable int64 numpy array sharing this histogram's memory."""
        np = require_numpy()
        return np.frombuffer(self._counts, dtype=np.int64)

    # -- recording -----------------------------------------------------------------------

    def record(self, value: int, count: int = 1) -> None:
        """Record ``value`` (an integer >= 0) ``count`` times (``count >= 1``)."""
        layout = self._layout
        if value > layout.highest or value < 0 or count < 1:
            value = self._out_of_range(value, count)
        b = (value | layout.mask).bit_length() - layout.half_mag - 1
        self._counts[(b << layout.half_mag) + (value >> b)] += count
        self._total += count

    def _out_of_range(self, value: int, count: int) -> int:
        if count < 1:
            raise InvalidConfig("Histogram.record", "count", count, "an integer >= 1")
        if value < 0:
            raise InvalidConfig("Histogram.record", "value", value, "an integer >= 0")
        self.overflow += count
        return self._layout.highest

    def record_array(self, values: Any) -> None:
        """Record every value of an integer numpy array (vectorized; needs numpy).

        Indices come from :meth:`Layout.index_array`, in blocks of :data:`CHUNK` values;
        they are added with ``np.bincount`` when a block is large against the counts array,
        else with ``np.add.at``.
        """
        np = require_numpy()
        arr = np.asarray(values)
        if arr.size == 0:
            return
        if not np.issubdtype(arr.dtype, np.integer):
            raise InvalidConfig(
                "Histogram.record_array", "values", f"<array of {arr.dtype}>", "integers"
            )
        arr = arr.astype(np.int64, copy=False).ravel()
        if int(arr.min()) < 0:
            raise InvalidConfig("Histogram.record_array", "values", int(arr.min()), "integers >= 0")
        layout = self._layout
        over = int(np.count_nonzero(arr > layout.highest))
        if over:
            arr = np.minimum(arr, layout.highest)
            self.overflow += over
        counts = self.counts_view()
        for start in range(0, len(arr), CHUNK):
            add_indices(np, counts, layout.index_array(np, arr[start : start + CHUNK]))
        self._total += int(arr.size)

    def merge(self, other: Histogram) -> None:
        """Add every count of ``other`` to this histogram.

        Exact when both have the same significant digits (the index mapping is then the same):
        counts add index by index, and buckets of ``other`` above this histogram's highest
        value are clamped to it and counted in ``overflow``. With different digits the counts
        are re-bucketed: each bucket of ``other`` is recorded at its lowest equivalent value,
        as HdrHistogram does, which is exact to the coarser precision of the two.
        """
        if not isinstance(other, Histogram):
            raise InvalidConfig("Histogram.merge", "other", other, "a Histogram")
        mine, theirs = self._layout, other._layout
        src = other._counts if other is not self else array("q", other._counts)
        np = optional_numpy()
        if mine.digits == theirs.digits:
            # Same index mapping: add index by index up to the bucket of our highest value.
            n = theirs.length
            if theirs.highest > mine.highest:
                n = mine.index(mine.highest) + 1
            if np is not None:
                s = np.frombuffer(src, dtype=np.int64)
                np.frombuffer(self._counts, dtype=np.int64)[:n] += s[:n]
                beyond = int(s[n:].sum())
            else:
                counts = self._counts
                for i in range(n):
                    c = src[i]
                    if c:
                        counts[i] += c
                beyond = sum(src[n:])
            if beyond:
                self._counts[mine.index(mine.highest)] += beyond
                self.overflow += beyond
        else:
            for i, c in enumerate(src):
                if c:
                    value = theirs.lowest_at(i)
                    if value > mine.highest:
                        self.overflow += c
                        value = mine.highest
                    self._counts[mine.index(value)] += c
        self._total += other._total
        self.overflow += other.overflow

    def reset(self) -> None:
        """Forget every recorded value."""
        self._counts = array("q", bytes(8 * self._layout.length))
        self._total = 0
        self.overflow = 0

    def copy(self) -> Histogram:
        hist = Histogram._of_layout(self._layout)
        hist._counts = array("q", self._counts)
        hist._total = self._total
        hist.overflow = self.overflow
        return hist

    # -- figures -------------------------------------------------------------------------

    @property
    def count(self) -> int:
        """Number of recorded values."""
        return self._total

    def _last_index(self) -> int:
        """Index of the highest non-empty bucket, -1 when empty."""
        if self._total == 0:
            return -1
        np = optional_numpy()
        if np is not None:
            nz = np.flatnonzero(np.frombuffer(self._counts, dtype=np.int64))
            return int(nz[-1]) if len(nz) else -1
        counts = self._counts
        for i in range(len(counts) - 1, -1, -1):
            if counts[i]:
                return i
        return -1  # pragma: no cover - a non-zero total has a non-empty bucket

    def _first_index(self) -> int:
        if self._total == 0:
            return -1
        np = optional_numpy()
        if np is not None:
            nz = np.flatnonzero(np.frombuffer(self._counts, dtype=np.int64))
            return int(nz[0]) if len(nz) else -1
        for i, c in enumerate(self._counts):
            if c:
                return i
        return -1  # pragma: no cover

    @property
    def min(self) -> int:
        """Lowest equivalent value of the smallest recorded value (0 when empty)."""
        i = self._first_index()
        return 0 if i < 0 else self._layout.lowest_at(i)

    @property
    def max(self) -> int:
        """Highest equivalent value of the largest recorded value (0 when empty)."""
        i = self._last_index()
        return 0 if i < 0 else self._layout.highest_at(i)

    @property
    def mean(self) -> float:
        """``sum(median_equivalent(i) * count[i]) / count`` (0.0 when empty)."""
        if self._total == 0:
            return 0.0
        np = optional_numpy()
        if np is not None:
            low, width = self._layout.tables(np)
            counts = np.frombuffer(self._counts, dtype=np.int64)
            medians = (low + (width >> 1)).astype(np.float64)
            return float(np.dot(medians, counts.astype(np.float64))) / self._total
        layout = self._layout
        total = 0
        for i, c in enumerate(self._counts):
            if c:
                total += layout.median_at(i) * c
        return total / self._total

    @property
    def stddev(self) -> float:
        """``sqrt(sum((median_equivalent(i) - mean)**2 * count[i]) / count)`` (population)."""
        if self._total == 0:
            return 0.0
        mean = self.mean
        np = optional_numpy()
        if np is not None:
            low, width = self._layout.tables(np)
            counts = np.frombuffer(self._counts, dtype=np.int64).astype(np.float64)
            dev = (low + (width >> 1)).astype(np.float64) - mean
            return math.sqrt(float(np.dot(dev * dev, counts)) / self._total)
        layout = self._layout
        acc = 0.0
        for i, c in enumerate(self._counts):
            if c:
                d = layout.median_at(i) - mean
                acc += d * d * c
        return math.sqrt(acc / self._total)

    def value_at_percentile(self, percentile: float) -> int:
        """The value at ``percentile`` (0..100), with HdrHistogram's definition (0 when empty)."""
        return self.percentiles([percentile])[0]

    def percentiles(self, percentiles: Iterable[float]) -> list[int]:
        """:meth:`value_at_percentile` of each percentile, in the order given, in one pass.

        The target rank is ``max(1, ceil(p / 100 * count))`` computed exactly on the decimal
        value of ``p`` (so ``p(99.9)`` of 1000 values is rank 999, not 1000 by float error).
        """
        ps = [_check_percentile(p) for p in percentiles]
        total = self._total
        if total == 0:
            return [0 for _ in ps]
        targets = [max(1, math.ceil(_decimal(p) * total / 100)) for p in ps]
        layout = self._layout
        np = optional_numpy()
        if np is not None:
            cum = np.cumsum(np.frombuffer(self._counts, dtype=np.int64))
            found = [int(i) for i in np.searchsorted(cum, targets, side="left")]
        else:
            order = sorted(range(len(ps)), key=lambda k: targets[k])
            found = [0] * len(ps)
            running = 0
            i = -1
            counts = self._counts
            for k in order:
                while running < targets[k]:
                    i += 1
                    running += counts[i]
                found[k] = i
        return [
            layout.lowest_at(i) if p == 0 else layout.highest_at(i)
            for p, i in zip(ps, found, strict=True)
        ]

    # -- comparison ----------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Histogram):
            return NotImplemented
        return (
            self._layout.same(other._layout)
            and self._counts == other._counts
            and self.overflow == other.overflow
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Histogram(count={self._total}, highest_trackable_value={self._layout.highest}, "
            f"significant_digits={self._layout.digits}, overflow={self.overflow})"
        )

    # -- encoding ------------------------------------------------------------------------

    def encode(self) -> str:
        """HdrHistogram V2 compressed encoding, base64 (the ``HISTFAAA...`` strings).

        Payload: a 40-byte big-endian header (cookie 0x1c849313, payload length,
        normalizing index offset 0, significant digits, lowest 1, highest, conversion ratio
        1.0) then the counts up to the last non-empty bucket as ZigZag LEB128 varints, a run
        of ``n >= 2`` empty buckets written as ``-n``. The payload is deflated (zlib) behind
        an 8-byte header (cookie 0x1c849314, compressed length).
        """
        limit = self._last_index() + 1
        np = optional_numpy()
        if np is not None:
            body = _encode_counts_np(np, np.frombuffer(self._counts, dtype=np.int64)[:limit])
        else:
            body = _encode_counts_py(self._counts, limit)
        layout = self._layout
        header = _PAYLOAD_HEADER.pack(
            _ENCODING_COOKIE, len(body), 0, layout.digits, 1, layout.highest, 1.0
        )
        compressed = zlib.compress(header + body)
        blob = _OUTER_HEADER.pack(_COMPRESSED_COOKIE, len(compressed)) + compressed
        return base64.b64encode(blob).decode("ascii")

    @classmethod
    def decode(cls, text: str | bytes) -> Histogram:
        """A histogram from an HdrHistogram V2 encoding (compressed or not), base64.

        Raises :class:`~brownout.errors.ResultsError` on anything else. Only the lowest
        discernible value 1 and highest trackable values up to 2**53 are supported.
        """
        return decode_histogram(text, field="histogram")


def _check_percentile(p: object) -> float:
    if not isinstance(p, int | float) or isinstance(p, bool) or math.isnan(p) or not 0 <= p <= 100:
        raise InvalidConfig("Histogram", "percentile", p, "a number in [0, 100]")
    return float(p)


def _decimal(p: float) -> Fraction:
    """The decimal value of ``p`` as written (99.9 -> 999/10), not its binary float."""
    return Fraction(repr(p))


def add_indices(np: ModuleType, counts: Any, indices: Any) -> None:
    """``counts[i] += 1`` for every ``i`` in ``indices`` (repeated indices add up)."""
    if len(indices) * 8 >= len(counts):
        counts += np.bincount(indices, minlength=len(counts))
    else:
        np.add.at(counts, indices, 1)


# -- varint codec ----------------------------------------------------------------------------


def _zigzag_varint(out: bytearray, value: int) -> None:
    z = ((value << 1) ^ (value >> 63)) & 0xFFFFFFFFFFFFFFFF
    for _ in range(8):
        if z < 0x80:
            out.append(z)
            return
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z & 0xFF)  # the 9th byte carries 8 bits


def _encode_counts_py(counts: array[int], limit: int) -> bytes:
    out = bytearray()
    i = 0
    while i < limit:
        c = counts[i]
        i += 1
        if c == 0:
            zeros = 1
            while i < limit and counts[i] == 0:
                zeros += 1
                i += 1
            _zigzag_varint(out, -zeros if zeros > 1 else 0)
        else:
            _zigzag_varint(out, c)
    return bytes(out)


def _encode_counts_np(np: ModuleType, counts: Any) -> bytes:
    if len(counts) == 0:
        return b""
    nz = np.flatnonzero(counts)
    gaps = np.diff(nz, prepend=-1) - 1  # empty buckets before each non-empty one
    tokens = np.empty(2 * len(nz), dtype=np.int64)
    tokens[0::2] = np.where(gaps >= 2, -gaps, 0)
    tokens[1::2] = counts[nz]
    keep = np.ones(len(tokens), dtype=bool)
    keep[0::2] = gaps > 0
    tokens = tokens[keep]
    z = ((tokens << 1) ^ (tokens >> 63)).view(np.uint64)
    nbytes = np.ones(len(z), dtype=np.int64)
    for k in range(1, 9):
        nbytes += z >= np.uint64(1 << (7 * k))
    ends = np.cumsum(nbytes)
    starts = ends - nbytes
    out = np.zeros(int(ends[-1]), dtype=np.uint8)
    for j in range(9):
        m = nbytes > j
        if not m.any():
            break
        part = z[m] >> np.uint64(7 * j)
        if j < 8:
            byte = (part & np.uint64(0x7F)) | np.where(nbytes[m] > j + 1, 0x80, 0).astype(np.uint64)
        else:
            byte = part & np.uint64(0xFF)
        out[starts[m] + j] = byte.astype(np.uint8)
    return bytes(out.tobytes())


def _decode_tokens_py(data: bytes) -> list[int]:
    tokens: list[int] = []
    i, n = 0, len(data)
    while i < n:
        z = 0
        shift = 0
        for k in range(9):
            if i >= n:
                raise ValueError("truncated varint")
            byte = data[i]
            i += 1
            if k == 8:
                z |= byte << 56
                break
            z |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        tokens.append((z >> 1) ^ -(z & 1))
    return tokens


def _fill_counts_py(counts: array[int], tokens: list[int]) -> int:
    i = 0
    total = 0
    n = len(counts)
    for t in tokens:
        if t < 0:
            i -= t
            continue
        if i >= n:
            raise ValueError("more buckets than the layout has")
        counts[i] = t
        total += t
        i += 1
    if i > n:
        raise ValueError("more buckets than the layout has")
    return total


def _fill_counts_np(np: ModuleType, counts: Any, data: bytes) -> int | None:
    """Vectorized decode; ``None`` when a 9-byte varint needs the plain decoder."""
    b = np.frombuffer(data, dtype=np.uint8)
    if len(b) == 0:
        return 0
    ends = np.flatnonzero(b < 0x80)
    if len(ends) == 0 or ends[-1] != len(b) - 1:
        return None
    lengths = np.diff(ends, prepend=-1)
    if int(lengths.max()) > 8:
        return None
    starts = ends - lengths + 1
    pos = np.arange(len(b), dtype=np.int64) - np.repeat(starts, lengths)
    parts = (b & 0x7F).astype(np.uint64) << (7 * pos).astype(np.uint64)
    z = np.add.reduceat(parts, starts)
    tokens = (z >> np.uint64(1)).astype(np.int64) ^ -(z & np.uint64(1)).astype(np.int64)
    advance = np.where(tokens < 0, -tokens, 1)
    ends_at = np.cumsum(advance)
    if int(ends_at[-1]) > len(counts):
        raise ValueError("more buckets than the layout has")
    where = ends_at - advance
    m = tokens > 0
    counts[where[m]] = tokens[m]
    return int(tokens[m].sum())


def decode_histogram(text: str | bytes, *, field: str) -> Histogram:
    """Decode an HdrHistogram V2 base64 string; errors name ``field``."""
    allowed = "an HdrHistogram V2 base64 encoding (HISTFAAA...)"
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    if not isinstance(text, str):
        raise ResultsError(field, text, allowed)
    shown = text if len(text) <= 24 else text[:20] + "..."
    try:
        blob = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ResultsError(field, shown, allowed + "; it is not valid base64") from None
    if len(blob) < _OUTER_HEADER.size:
        raise ResultsError(field, shown, allowed + "; it is too short")
    cookie, length = _OUTER_HEADER.unpack_from(blob)
    base = cookie & _COOKIE_BASE_MASK
    if base == _COMPRESSED_COOKIE & _COOKIE_BASE_MASK:
        if length < 0 or len(blob) < _OUTER_HEADER.size + length:
            raise ResultsError(field, shown, allowed + "; its compressed length is wrong")
        try:
            payload = zlib.decompress(blob[_OUTER_HEADER.size : _OUTER_HEADER.size + length])
        except zlib.error:
            raise ResultsError(field, shown, allowed + "; it does not inflate") from None
    elif base == _ENCODING_COOKIE & _COOKIE_BASE_MASK:
        payload = blob
    else:
        raise ResultsError(field, shown, allowed + f"; cookie 0x{cookie:08x} is not V2")
    if len(payload) < _PAYLOAD_HEADER.size:
        raise ResultsError(field, shown, allowed + "; its payload is too short")
    cookie, body_len, offset, digits, lowest, highest, _ratio = _PAYLOAD_HEADER.unpack_from(payload)
    if cookie & _COOKIE_BASE_MASK != _ENCODING_COOKIE & _COOKIE_BASE_MASK:
        raise ResultsError(field, shown, allowed + f"; payload cookie 0x{cookie:08x} is not V2")
    if offset != 0:
        raise ResultsError(field, shown, allowed + " with normalizing index offset 0")
    if lowest != 1:
        raise ResultsError(field, shown, allowed + f" with lowest value 1 (it has {lowest})")
    if not 1 <= digits <= 5 or not 2 <= highest <= _MAX_HIGHEST:
        raise ResultsError(
            field,
            shown,
            allowed + f" with 1..5 digits and highest value up to 2**53 "
            f"(it has {digits} digits, highest {highest})",
        )
    body = payload[_PAYLOAD_HEADER.size : _PAYLOAD_HEADER.size + body_len]
    if body_len < 0 or len(body) != body_len:
        raise ResultsError(field, shown, allowed + "; its payload length is wrong")
    hist = Histogram(highest, digits)
    np = optional_numpy()
    try:
        total = None
        if np is not None:
            total = _fill_counts_np(np, hist.counts_view(), body)
        if total is None:
            total = _fill_counts_py(hist._counts, _decode_tokens_py(body))
    except ValueError as exc:
        raise ResultsError(field, shown, allowed + f"; its counts are corrupt ({exc})") from None
    hist._total = total
    return hist


# -- interval log ----------------------------------------------------------------------------


class LogInterval(NamedTuple):
    """One line of an HdrHistogram interval log.

    ``start_s`` is seconds from the log's start time, ``length_s`` the interval's length,
    ``histogram`` what was recorded in it and ``tag`` an optional label (no commas or spaces).
    """

    start_s: float
    length_s: float
    histogram: Histogram
    tag: str | None = None


def write_interval_log(
    fh: IO[str],
    intervals: Iterable[LogInterval | tuple[float, float, Histogram]],
    *,
    start_time_s: float = 0.0,
    max_value_unit_ratio: float = 1000.0,
) -> int:
    """Write an HdrHistogram interval log (format version 1.3) that HdrHistogram tools read.

    ``start_time_s`` is the run's start in seconds since the epoch (written as ``StartTime``
    and ``BaseTime``, so interval timestamps are relative to it). Each line is
    ``[Tag=<tag>,]<start>,<length>,<max>,<HISTFAAA...>`` with ``max`` the interval's highest
    value divided by ``max_value_unit_ratio`` (1000: microseconds shown as milliseconds).
    Returns the number of intervals written.
    """
    if not isinstance(start_time_s, int | float) or not math.isfinite(start_time_s):
        raise InvalidConfig("write_interval_log", "start_time_s", start_time_s, "a finite number")
    if not isinstance(max_value_unit_ratio, int | float) or not max_value_unit_ratio > 0:
        raise InvalidConfig(
            "write_interval_log", "max_value_unit_ratio", max_value_unit_ratio, "a number > 0"
        )
    when = datetime.fromtimestamp(start_time_s, tz=UTC).isoformat()
    fh.write("#[Histogram log format version 1.3]\n")
    fh.write(f"#[StartTime: {start_time_s:.3f} (seconds since epoch), {when}]\n")
    fh.write(f"#[BaseTime: {start_time_s:.3f} (seconds since epoch)]\n")
    fh.write('"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"\n')
    written = 0
    for n, item in enumerate(intervals):
        interval = item if isinstance(item, LogInterval) else LogInterval(*item)
        if not isinstance(interval.histogram, Histogram):
            raise InvalidConfig(
                "write_interval_log", f"intervals[{n}].histogram", interval.histogram, "a Histogram"
            )
        tag = interval.tag
        if tag is not None and (not tag or any(ch in tag for ch in ", \t\r\n")):
            raise InvalidConfig(
                "write_interval_log", f"intervals[{n}].tag", tag, "a non-empty word without commas"
            )
        prefix = f"Tag={tag}," if tag is not None else ""
        hist = interval.histogram
        fh.write(
            f"{prefix}{interval.start_s:.3f},{interval.length_s:.3f},"
            f"{hist.max / max_value_unit_ratio:.3f},{hist.encode()}\n"
        )
        written += 1
    return written
