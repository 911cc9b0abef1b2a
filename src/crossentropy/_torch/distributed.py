"""Where a rank's classes sit in the global vocabulary, its collectives, and
the one small collective that checks every rank was called alike.

The kernels (``_torch.cross_entropy``, ``_torch.linear``, and on CUDA
``_triton.cross_entropy``, ``_triton.linear``) take a
:class:`VocabShards` where they would otherwise use their own statistics:
they shift each block by the shard's own maximum, then all-reduce a MAX of
the row maxima and one SUM of the re-shifted statistics
(``losses.cross_entropy.reshift``). Nothing else about vocab-parallel
cross-entropy is different from the single-device code.

Before any of that, :func:`setup` gathers one fixed-size int64 record from
every rank (22 numbers: the shard's start and width, the batch shape and
dtype, every option, checksums of the targets and class weights, and whether
the rank's own arguments were valid) and checks that they agree and that the
shards tile ``[0, V)``; every rank then raises the same error, naming what
differs, instead of hanging in a collective of mismatched sizes or
returning a rank-dependent loss. It costs one all-gather of ``22 * world``
int64s and a host read per call; ``check_ranks=False`` skips it.
"""

from __future__ import annotations

import struct

import torch
import torch.distributed as dist

from .. import _checks
from .._array import transformed
from .collectives import AllReduce, Copy

_REDUCTIONS = ("none", "mean", "sum")
_DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)
_FIELDS = ("valid", "vocab_start given", "shard start", "shard width", "batch shape", "batch shape",
           "hidden size", "dtype", "reduction", "ignore_index", "label_smoothing", "z_loss", "softcap",
           "weight length", "class weights", "class weights", "targets", "targets", "shift", "num_items_in_batch",
           "bias present", "target kind")
# Fields that every rank must share (the others are the shard layout).
_SHARED = tuple(i for i, f in enumerate(_FIELDS) if f not in ("valid", "shard start", "shard width"))


class VocabShards:
    """This rank's slice ``[start, start + width)`` of the global vocabulary."""

    def __init__(self, group, start, width, vocab, weight, device):
        self.group, self.start, self.width, self.vocab, self.device = group, start, width, vocab, device
        self.weight = weight  # the global (V,) class weights in the compute dtype, or None
        self.differentiable = False  # the collectives autograd records (differentiable_copy)

    def local_columns(self, index, counted):
        """Each row's target as a column of this shard (0 where it is not here:
        a safe index), and whether it is here and counts."""
        local = index - self.start
        here = counted & (local >= 0) & (local < self.width)
        return torch.where(here, local, torch.zeros_like(local)), here

    def local(self, weight):
        """This shard's slice of the global class weights (or None)."""
        return None if weight is None else weight[self.start:self.start + self.width]

    def soft_total(self, counted, e, dtype):
        """``sum_c b_c`` over this shard's classes: ``e / V`` times the shard's
        weight (its width without weights), on counted rows."""
        w = self.width if self.weight is None else self.local(self.weight).sum()
        return (e / self.vocab) * w * counted.to(dtype)

    def all_max(self, t):
        """The elementwise maximum over the ranks (in place unless
        differentiable; its value is a shift, never differentiated)."""
        if self.differentiable:
            return AllReduce.apply(t.detach(), dist.ReduceOp.MAX, self.group)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return t

    def all_sum(self, t):
        """The elementwise sum over the ranks: in place in the kernels'
        forward, a differentiable :class:`.collectives.AllReduce` when ``differentiable``."""
        if self.differentiable:
            return AllReduce.apply(t, dist.ReduceOp.SUM, self.group)
        dist.all_reduce(t, group=self.group)
        return t

    def replicated(self, t):
        """A replicated tensor entering this rank's part of the computation
        (the input of linear cross-entropy): itself, with a backward that sums
        every rank's contribution (:class:`.collectives.Copy`)."""
        return Copy.apply(t, self.group)

    def differentiable_copy(self):
        """The same shards, whose collectives autograd records (to every order)."""
        other = VocabShards(self.group, self.start, self.width, self.vocab, self.weight, self.device)
        other.differentiable = True
        return other


def _bits(value) -> int:
    """A float as the int64 of its IEEE bits (None as -1), for exact comparison."""
    if value is None:
        return -1
    return struct.unpack("<q", struct.pack("<d", float(value)))[0]


def _checksums(t):
    """Two order-independent int64 checksums of an array (exact: integer sums);
    inside ``torch.func`` transforms (no values to read), a constant."""
    if t is None:
        return -1, -1
    if transformed(t):
        return -2, -2
    flat = t.detach().reshape(-1)
    ints = flat.double().view(torch.int64) if flat.is_floating_point() else flat.long()
    ints = torch.remainder(ints, 1_000_003)
    mult = torch.remainder(torch.arange(flat.numel(), device=flat.device), 1009) + 1
    return int(ints.sum()), int((ints * mult).sum())


def setup(group, width, vocab_start, weight, target, *, shape, hidden, dtype, shift, num_items, bias,
          check_ranks, validate_local):
    """The :class:`VocabShards` of this rank, after checking that every rank was
    called alike (see the module docstring). ``validate_local()`` checks this
    rank's own arguments and returns the validated options, or raises; with
    ``check_ranks`` its error is shared first, so that no rank is left waiting
    in a collective."""
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    error = options = None
    try:
        options = validate_local()
        if vocab_start is not None and _checks.integer("vocab_start", vocab_start) < 0:
            raise ValueError(f"vocab_start={vocab_start} must be >= 0")
        weight = None if weight is None else torch.as_tensor(weight, device=target.device)
    except (TypeError, ValueError, IndexError) as exc:
        if not check_ranks:
            raise
        error = exc
    start = rank * width if vocab_start is None else vocab_start
    device = target.device if isinstance(target, torch.Tensor) else torch.device("cpu")
    if not check_ranks:
        return _shards(group, world, width, start, vocab_start, weight, device, None)
    shape = tuple(shape) + (-1, -1)
    ok = error is None
    record = [ok, vocab_start is not None, start, width, shape[0], shape[1], hidden,
              _DTYPES.index(dtype) if dtype in _DTYPES else -1, *_option_fields(options if ok else None),
              -1 if weight is None or not ok else int(weight.numel()), *(_checksums(weight) if ok else (0, 0)),
              *(_checksums(target) if ok else (0, 0)), int(bool(shift)),
              _bits(None if num_items is None or not ok else float(num_items)), int(bias is not None),
              int(isinstance(target, torch.Tensor) and target.is_floating_point())]
    mine = torch.tensor(record, dtype=torch.int64, device=device)
    every = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(every, mine, group=group)
    table = torch.stack(every).cpu().tolist()
    if error is not None:
        raise error
    bad = [r for r, row in enumerate(table) if not row[0]]
    if bad:
        raise ValueError(f"the vocab-parallel call was invalid on rank(s) {bad} of {world}; see the error there")
    if weight is not None and table[0][13] != sum(row[3] for row in table):
        raise ValueError(f"weight has length {table[0][13]} but the shards cover V={sum(row[3] for row in table)} "
                         "classes; class weights are the global (V,) vector, the same on every rank")
    for i in _SHARED:
        values = [row[i] for row in table]
        if len(set(values)) > 1:
            raise ValueError(f"{_FIELDS[i]} not the same on every rank of the group ({_show(i, values)}); "
                             "every rank must be called with the same batch, targets, class weights and options")
    starts, widths = [row[2] for row in table], [row[3] for row in table]
    if vocab_start is None and len(set(widths)) > 1:
        raise ValueError(f"the shards have uneven widths {widths} (ranks 0..{world - 1}); give vocab_start "
                         "(each rank's first global class) for uneven shards")
    order = sorted(range(world), key=lambda r: starts[r])
    edge = 0
    for r in order:
        if starts[r] != edge:
            what = "overlap" if starts[r] < edge else "leave a gap"
            layout = ", ".join(f"rank {q}: [{starts[q]}, {starts[q] + widths[q]})" for q in order)
            raise ValueError(f"the vocabulary shards {what} at class {min(edge, starts[r])}: {layout}; they "
                             "must tile [0, V) without overlap")
        edge += widths[r]
    return _shards(group, world, width, start, vocab_start, weight, device, edge)


def _option_fields(options):
    """reduction, ignore_index, label_smoothing, z_loss, softcap as int64s (zeros when invalid)."""
    if options is None:
        return 0, 0, 0, 0, 0
    return (_REDUCTIONS.index(options.reduction), options.ignore_index, _bits(options.label_smoothing),
            _bits(options.z_loss), _bits(options.softcap))


def _show(i, values):
    if _FIELDS[i] in ("label_smoothing", "z_loss", "softcap", "num_items_in_batch"):
        values = [None if v == -1 else struct.unpack("<d", struct.pack("<q", v))[0] for v in values]
    if _FIELDS[i] == "reduction":
        values = [_REDUCTIONS[v] if 0 <= v < 3 else v for v in values]
    if _FIELDS[i] == "dtype":
        values = [str(_DTYPES[v]) if 0 <= v < 4 else "not floating" for v in values]
    return ", ".join(f"rank {r}: {v}" for r, v in enumerate(values))


def _shards(group, world, width, start, vocab_start, weight, device, vocab):
    """The shards, with the global vocabulary size: known from the checked
    layout, from the weights, from even shards, or (uneven shards, no check,
    no weights) from one all-reduce of the widths."""
    if vocab is None:
        if weight is not None:
            vocab = int(weight.shape[0])
        elif vocab_start is None:
            vocab = width * world
        else:
            total = torch.tensor([width], dtype=torch.int64, device=device)
            dist.all_reduce(total, group=group)
            vocab = int(total.item())
    return VocabShards(group, start, width, vocab, weight, device)
