"""The registry of cases: every public loss, its inputs over PyTorch's case
grid and the extremes, an independent float64 PyTorch reference for each, and
the paths every case runs through. The tests (``tests/test_registry.py`` and
the stem tests) and ``crossentropy check`` run exactly this.

A case is data only: ``make()`` returns float64 NumPy arguments; its
``reference`` computes the expected value from torch float64 tensors
(differentiable with respect to the first argument, so that torch's autograd
gives the expected gradient). :mod:`crossentropy.cases.paths` runs a case
through a path (NumPy, torch autograd through the core, the torch kernel,
linear cross-entropy, vocab-parallel) in a dtype and compares.

The cases need only NumPy; the references (and the paths) need torch, which
is imported when a reference is first used.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = ["Case", "CASES", "cases_for", "rng", "ref"]


@dataclass(frozen=True, eq=False)
class Case:
    id: str
    fn: str  # the public function's name in ``crossentropy``
    make: Callable[[], tuple]  # () -> (args, kwargs): float64 NumPy arrays
    reference_name: str  # a function of crossentropy.cases.references: (torch float64 args, kwargs) -> value
    tags: frozenset = field(default_factory=frozenset)
    # "value-only": the gradient is infinite somewhere (p = 0 of a divergence)
    # "tiny": values far below 1 whose relative precision is the point (confident BCE)
    # "extreme": +-1e4, +-inf, empty or all-ignored batches, zero weights

    def __repr__(self):
        return self.id

    @property
    def reference(self):
        from . import references

        return getattr(references, self.reference_name)

    @property
    def function(self):
        import crossentropy

        return getattr(crossentropy, self.fn)


class _ReferenceNames:
    """``ref.cross_entropy`` is the name "cross_entropy": cases name their
    reference, and torch is imported only when one is used."""

    def __getattr__(self, name):
        return name


ref = _ReferenceNames()


def rng(*key):
    """A generator seeded by a case's parameters, the same in every run."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _all():
    from . import binary, categorical, divergences

    return tuple(categorical.cases() + binary.cases() + divergences.cases())


CASES = _all()


def cases_for(*names):
    """The cases of the named functions (all cases when none is named)."""
    return [c for c in CASES if not names or c.fn in names]
