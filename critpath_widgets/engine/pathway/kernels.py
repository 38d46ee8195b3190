"""Exact top-k selection per row without sorting millions of scores.

``topk_mask(scores, k)`` keeps exactly ``k`` entries of every row of a (rows, n) tensor:
the largest scores, ties broken by position (lowest index first), as a full stable
sort would. A sorted random sample of each row brackets the k-th largest value; only
the few entries inside the bracket are sorted. Cost: two comparisons over the scores
and a few passes over bytes, all on the scores' device (no copy to the CPU or numpy).
"""

from __future__ import annotations

import math

import torch

from .. import memory

#: largest sample of a row that brackets its k-th value; smaller rows sample 1/16 of it
_SAMPLE = 65536
#: rows whose sample would be smaller than this are selected exactly (kthvalue)
_MIN_SAMPLE = 1024
_SEED = 0x5EED


def count_true(mask: torch.Tensor) -> torch.Tensor:
    """Per-row count of a 2-D bool tensor (cheaper than summing the bools)."""
    # count_nonzero over a whole contiguous row is the fast kernel; the row-wise
    # reductions over bools are slower, so count row by row (one kernel per row)
    return torch.stack([torch.count_nonzero(row) for row in mask])


def count_ones(w: torch.Tensor) -> torch.Tensor:
    """Per-row count of a 2-D tensor of 0/1 values: a float row sum while it is exact
    (rows shorter than the mantissa), else a count of the nonzero entries."""
    if w.dtype == torch.bool:
        return count_true(w)
    exact = {torch.float64: 2**53, torch.float32: 2**24}.get(w.dtype, 0)
    if w.shape[1] < exact:
        return w.sum(dim=1).long()
    return count_true(w != 0)


def _exact_small(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Exact top-k of each row from its k-th largest value (a selection, not a sort)."""
    thr = torch.kthvalue(scores, scores.shape[1] - k + 1, dim=1).values
    return mask_at_threshold(scores, thr, k)


def _sample_size(n: int) -> int:
    """Sample size for a row of n: the larger the sample, the narrower the bracket, but
    two selections over the sample cost about as much as one over n/16 entries."""
    return min(_SAMPLE, n // 16)


_SAMPLE_INDEX: dict[tuple[int, int, str], torch.Tensor] = {}


def _sample_index(n: int, size: int, device: torch.device) -> torch.Tensor:
    """A fixed random sample of ``size`` column positions out of n, sorted (a sorted
    gather streams through memory; a random-order one misses the cache at every element).
    Cached per (n, size, device)."""
    key = (n, size, str(device))
    idx = _SAMPLE_INDEX.get(key)
    if idx is None:
        g = torch.Generator(device="cpu").manual_seed(_SEED)
        idx = torch.randint(0, n, (size,), generator=g).sort().values.to(device)
        if len(_SAMPLE_INDEX) >= 64:
            _SAMPLE_INDEX.clear()
        _SAMPLE_INDEX[key] = idx
    return idx


def _bracket(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (lo, hi) that very likely enclose the k-th largest value."""
    rows, n = scores.shape
    size = _sample_size(n)
    sample = scores.index_select(1, _sample_index(n, size, scores.device))
    return _sample_bracket(sample, k / n)


def _sample_bracket(sample: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (lo, hi) from a random sample (rows, size) of rows whose largest share p is
    kept: four standard deviations of the sample's rank either side (a miss is caught)."""
    rows, size = sample.shape
    r = p * size
    d = 4.0 * math.sqrt(size * p * (1 - p)) + 8
    i_hi, i_lo = math.floor(r - d), math.ceil(r + d)  # ranks from the top, 0-based

    inf = torch.full((rows,), math.inf, dtype=sample.dtype, device=sample.device)
    if i_lo >= size:
        lo, top, m = -inf, sample, size
    else:  # the i_lo + 1 largest, then hi among them: half the cost of two selections
        top = torch.topk(sample, i_lo + 1, dim=1, sorted=False).values
        lo, m = top.amin(dim=1), i_lo + 1
    hi = torch.kthvalue(top, m - i_hi, dim=1).values if i_hi >= 0 else inf
    return lo, hi


def _kth_largest(v: torch.Tensor, q: int) -> torch.Tensor:
    """The q-th largest entry (1-based) of a 1-D tensor: a long one is bracketed by a
    strided sample first, so that only the few entries inside the bracket are selected
    from (a selection costs time for every entry it reads)."""
    m = v.numel()
    if m < 16 * _MIN_SAMPLE:
        return torch.kthvalue(v, m - q + 1).values
    lo, hi = (b[0] for b in _sample_bracket(v[::16][None], q / m))
    inner = v[(v > lo) & (v <= hi)]
    r = q - int(torch.count_nonzero(v > hi))  # its rank inside the bracket
    if 0 < r <= inner.numel():
        return torch.kthvalue(inner, inner.numel() - r + 1).values
    return torch.kthvalue(v, m - q + 1).values


def _sparse_nonzero(flags: torch.Tensor) -> torch.Tensor:
    """Ascending positions of the True entries of a sparse 1-D bool tensor whose length
    is a multiple of 8: first the 8-byte words holding any, then the bytes inside those
    (nonzero's cost is per scanned element; this scans 8x fewer)."""
    words = flags.view(torch.int64).nonzero()[:, 0]
    r, c = flags.view(-1, 8).index_select(0, words).nonzero().unbind(1)
    return words.index_select(0, r) * 8 + c


def topk_mask(scores: torch.Tensor, k: int, dtype: torch.dtype = torch.bool) -> torch.Tensor:
    """Mask keeping exactly ``k`` entries per row: largest first, ties by position.

    ``dtype`` other than bool gives the same selection as 0/1 values, compared straight
    into that dtype (a bool mask converted afterwards costs one more pass).
    """
    if scores.dim() != 2:
        raise ValueError("scores must be 2-D (rows, n)")
    return topk_segments(scores, [(0, scores.shape[1], k)], dtype)


def topk_segments(
    scores: torch.Tensor, segments: list[tuple[int, int, int]], dtype: torch.dtype = torch.bool
) -> torch.Tensor:
    """:func:`topk_mask` of each column segment ``(start, stop, k)`` of every row at once
    (the segments cover the columns without overlap): one buffer, one scan for the
    undecided entries and one fix-up for all segments, so that many small segments (the
    sites of a per-layer selection) cost little more than one row of the same length.

    Per segment, a sorted random sample brackets the k-th largest value; everything above
    the bracket is kept, and only the few entries inside it are ranked. Cost: two
    comparisons over the scores and a few passes over bytes, all on the scores' device.
    """
    rows, n = scores.shape
    scores = scores.contiguous()
    out = memory.empty(scores.shape, dtype, scores.device)
    sampled = []
    for a, b, k in segments:
        if 0 < k < b - a and _sample_size(b - a) >= _MIN_SAMPLE:
            sampled.append((a, b, k))
        else:  # all, none, or a short segment: exact at once
            exact = _exact_small(scores[:, a:b], k) if 0 < k < b - a else torch.tensor(k > 0)
            out[:, a:b] = exact
    if not sampled:
        return out
    # lo < s <= hi: the undecided entries, in a buffer padded to whole 8-byte words
    size = rows * n
    buf = memory.empty((-(-size // 8) * 8,), torch.bool, scores.device)
    buf[size:] = False
    band = buf[:size].view(rows, n)
    covered = sum(b - a for a, b, _ in sampled)
    if covered < n:
        band.fill_(False)
    open_segments = []
    for a, b, k in sampled:
        part, o, d = scores[:, a:b], out[:, a:b], band[:, a:b]
        lo, hi = _bracket(part, k)
        # everything above the bracket's floor; the floor's own value is left out so
        # that a mass of ties there (dead neurons scoring 0) never enters the band
        c_gt = _above_and_band(part, lo, hi, o, d)
        open_segments.append((a, b, k, lo, c_gt))
    lin = _sparse_nonzero(buf)  # flat positions, ascending
    del band
    vals = scores.view(-1).index_select(0, lin)
    # each (segment, row)'s flat span, and where its band entries start and end in lin
    spans = [(r * n + a, r * n + b) for a, b, *_ in open_segments for r in range(rows)]
    runs = iter(torch.searchsorted(lin, torch.tensor(spans, device=lin.device)).tolist())
    drop = []  # flat positions of band entries that are not kept
    for a, b, k, lo, c_gt in open_segments:
        for r, c in enumerate(c_gt):
            i, j = next(runs)
            m = j - i  # the row's band entries in this segment
            need = k - (c - m)  # how many of them are kept
            if need > m:  # the k-th largest is lo itself: all of out, then lo's first ties
                if _keep_first_ties(scores[r, a:b], lo[r], k - c, out[r, a:b], buf[: b - a]):
                    continue
            if not 0 <= need <= m:  # the bracket missed (very unlikely): exact
                out[r, a:b] = _exact_small(scores[r : r + 1, a:b], k)[0]
                continue
            if need == m:
                continue
            if need == 0:
                drop.append(lin[i:j])
                continue
            seg = vals[i:j]
            thr = _kth_largest(seg, need)
            keep = seg > thr
            # ties at the threshold: the first ones by position, up to the row's quota
            tie = (seg == thr).nonzero()[:, 0]
            keep[tie[: need - int(keep.sum())]] = True
            drop.append(lin[i:j][~keep])
    del buf
    if drop:
        out.view(-1).index_fill_(0, torch.cat(drop), 0)
    return out


#: rows at least this long mark their band with hardtanh's backward, in chunks this long
_BAND_PASS_MIN = 65536
_CHUNK = 524288
_HARDTANH_BACKWARD = torch.ops.aten.hardtanh_backward


def _above_and_band(
    part: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, above: torch.Tensor, band: torch.Tensor
) -> list[int]:
    """above = part > lo and band = lo < part <= hi, per row; returns each row's count of
    entries above lo. (NaN-free scores.)

    Where lo >= 0, hardtanh's backward with the scores as both gradient and input gives
    each score strictly between lo and the float after hi, and 0 elsewhere: nonzero on
    the band exactly, as its entries are > lo >= 0. That pass and a cast to bool cost
    less than a second comparison into bool and an and with ``above`` (a bool-valued
    comparison runs slower than a float-valued one). Rows are done in chunks of
    :data:`_CHUNK` so that the chunk is still in the cache for the second pass, the cast
    and the count.
    """
    rows, n = part.shape
    if n < _BAND_PASS_MIN or not part.is_floating_point() or not bool((lo >= 0).all()):
        torch.gt(part, lo[:, None], out=above)
        torch.le(part, hi[:, None], out=band)
        band &= above if above.dtype == torch.bool else above.bool()
        return count_ones(above).tolist()
    top = torch.nextafter(hi, torch.full_like(hi, math.inf))
    values = memory.empty((min(n, _CHUNK),), part.dtype, part.device)
    counts = []
    for r, (a, b) in enumerate(zip(lo.tolist(), top.tolist(), strict=True)):
        total = torch.zeros((), dtype=torch.int64, device=part.device)
        for c in range(0, n, _CHUNK):
            row, v = part[r, c : c + _CHUNK], values[: min(_CHUNK, n - c)]
            o = above[r, c : c + _CHUNK]
            torch.gt(row, a, out=o)
            _HARDTANH_BACKWARD.grad_input(row, row, a, b, grad_input=v)
            band[r, c : c + _CHUNK].copy_(v)
            total += count_ones(o[None])[0]
        counts.append(int(total))
    return counts


_BLOCK = 4096


def _block_counts(flags: torch.Tensor) -> torch.Tensor:
    """Running count of the True entries of each row of a 2-D bool tensor, block by block
    of :data:`_BLOCK` entries (rows, blocks): the n-th True is then found by a search."""
    rows, n = flags.shape
    nb = -(-n // _BLOCK)
    padded = torch.zeros(rows, nb * _BLOCK, dtype=torch.uint8, device=flags.device)
    padded[:, :n] = flags.view(torch.uint8)
    per_block = padded.view(rows, nb, _BLOCK).sum(dim=2, dtype=torch.int32)
    return torch.cumsum(per_block, dim=1).long()


def _keep_first_ties(
    row: torch.Tensor,
    value: torch.Tensor,
    q: int,
    out: torch.Tensor,
    ties: torch.Tensor | None = None,
) -> bool:
    """Also keep, in ``out`` (a row's mask already holding its entries above ``value``),
    the row's first q entries equal to ``value`` by position: one comparison up to the
    cut after the q-th tie. False, with ``out`` unchanged, when there are fewer than q.
    ``ties`` is an optional bool buffer of the row's length."""
    ties = torch.eq(row, value, out=ties)
    cut = _cut_after(ties, _block_counts(ties[None])[0], q)
    if cut is None:
        return False
    torch.ge(row[:cut], value, out=out[:cut])
    return True


def _cut_after(flags: torch.Tensor, counts: torch.Tensor, q: int) -> int | None:
    """Position just after the q-th True entry (q >= 1) of a 1-D bool tensor, given its
    :func:`_block_counts`; None when it has fewer than q."""
    if int(counts[-1]) < q:
        return None
    b = int(torch.searchsorted(counts, q))  # the first block whose running count reaches q
    before = int(counts[b - 1]) if b > 0 else 0
    start = b * _BLOCK
    inside = flags[start : start + _BLOCK].nonzero()[:, 0]
    return start + int(inside[q - before - 1]) + 1


def mask_at_threshold(scores: torch.Tensor, thr: torch.Tensor, k: int) -> torch.Tensor:
    """Keep exactly k per row given each row's exact k-th largest value ``thr``.

    Entries above ``thr`` are kept; of those equal to it, the first ones by position.
    """
    mask = scores >= thr[:, None]
    if bool((count_true(mask) == k).all()):
        return mask
    mask = scores > thr[:, None]
    for r, q in enumerate((k - count_true(mask)).tolist()):
        if q > 0:
            _keep_first_ties(scores[r], thr[r], q, mask[r])
    return mask


class Ranking:
    """Sorted copies of non-negative scores, so that any k needs one comparison pass.

    The bit patterns of non-negative floats sort like the floats, and integer sorts are
    faster than float sorts; the sort is paid once (on first use)
    and then every new sparsity reads its threshold off the sorted keys.
    """

    def __init__(self, scores: torch.Tensor):
        self.scores = scores
        self._keys: dict[tuple[int, int], torch.Tensor] = {}
        self._usable: bool | None = None
        #: other sparsity-independent results derived from one scoring (layer summaries)
        self.cache: dict = {}

    @property
    def usable(self) -> bool:
        """True when the scores are non-negative floats whose bit patterns sort like them."""
        if self._usable is None:
            bits = _int_view(self.scores)
            self._usable = bits is not None and not bool((bits < 0).any())
        return self._usable

    def keys(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Row-wise ascending sorted bit patterns of columns [start, stop)."""
        stop = self.scores.shape[1] if stop is None else stop
        key = (start, stop)
        if key not in self._keys:
            bits = _int_view(self.scores[:, start:stop].contiguous())
            self._keys[key] = torch.sort(bits, dim=1).values
        return self._keys[key]

    def mask(self, k: int, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """topk_mask of columns [start, stop), from the sorted keys."""
        part = self.scores[:, start:stop]
        n = part.shape[1]
        if k >= n:
            return torch.ones_like(part, dtype=torch.bool)
        if k <= 0:
            return torch.zeros_like(part, dtype=torch.bool)
        thr = self.keys(start, stop)[:, n - k].contiguous().view(self.scores.dtype)
        if bool((thr == 0).all()):
            return self._mask_with_zero_ties(k, start, stop)
        return mask_at_threshold(part, thr, k)

    def threshold(self, k: int, start: int = 0, stop: int | None = None) -> torch.Tensor | None:
        """Per-row value t such that ``scores >= t`` keeps exactly the top k of columns
        [start, stop), read off the sorted keys; None when ties at t need a cut by
        position (or k keeps none or all)."""
        n = self.scores[:, start:stop].shape[1]
        if not 0 < k < n:
            return None
        keys = self.keys(start, stop)
        tk = keys[:, n - k].contiguous()
        # how many scores are >= the threshold: when exactly k, there is no tie to break
        first = torch.searchsorted(keys, tk[:, None])[:, 0]
        return tk.view(self.scores.dtype) if bool((n - first == k).all()) else None

    def weights(
        self, k: int, start: int = 0, stop: int | None = None, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The same selection as :meth:`mask`, as 0/1 values of the scores' dtype, written
        into ``out`` (shaped like the columns) when given.

        Comparing straight into a float tensor is cheaper than a bool mask plus a cast,
        and a 0/1 float mask is what the masked pass multiplies by anyway.
        """
        part = self.scores[:, start:stop]
        if out is None:
            out = memory.empty(part.shape, part.dtype, part.device)
        t = self.threshold(k, start, stop)
        if t is not None:
            return torch.ge(part, t[:, None], out=out)
        return out.copy_(self.mask(k, start, stop))

    def _mask_with_zero_ties(self, k: int, start: int, stop: int | None) -> torch.Tensor:
        """Threshold 0, the smallest score (dead neurons): all positive scores are kept,
        plus the first zeros by position. The zeros' block counts are computed once, so
        the cut after the quota-th zero is found by a search, not a scan."""
        key = ("zeros", start, stop)
        if key not in self.cache:
            pos = self.scores[:, start:stop] > 0
            zero = ~pos
            self.cache[key] = (pos, zero, _block_counts(zero))
        pos, zero, counts = self.cache[key]
        mask = pos.clone()
        quota = k - count_true(pos)
        for r, q in enumerate(quota.tolist()):  # one search per row, no per-element work
            if q > 0:  # below the cut: positive scores and the first q zeros
                mask[r, : _cut_after(zero[r], counts[r], q)] = True
        return mask


def _int_view(t: torch.Tensor) -> torch.Tensor | None:
    ints = {
        torch.float32: torch.int32,
        torch.float64: torch.int64,
        torch.float16: torch.int16,
        torch.bfloat16: torch.int16,
    }
    if t.dtype not in ints or not t.is_contiguous():
        return None
    return t.view(ints[t.dtype])
