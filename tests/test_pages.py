"""Large CPU buffers advised onto transparent huge pages (crossentropy._torch.pages)."""

import torch

from crossentropy._torch import pages


def test_large_buffer_is_advised_inside_its_own_bytes(monkeypatch):
    calls = []
    monkeypatch.setattr(pages, "_madvise", lambda: lambda start, length, advice: calls.append((start, length, advice)))
    x = torch.empty(300, 1 << 16)  # 75 MiB, over the threshold
    buf = pages.empty_like(x)
    assert buf.shape == x.shape and buf.dtype == x.dtype and buf.stride() == x.stride()
    (start, length, advice), = calls
    lo, hi = buf.data_ptr(), buf.data_ptr() + buf.untyped_storage().nbytes()
    assert advice == 14 and lo <= start and start + length <= hi
    assert start % pages._HUGE_PAGE == 0 and length % pages._HUGE_PAGE == 0 and length > 0
    buf.fill_(1.5)  # the memory is ordinary memory
    assert float(buf.sum()) == 1.5 * buf.numel()


def test_small_buffers_and_no_madvise_are_plain(monkeypatch):
    calls = []
    monkeypatch.setattr(pages, "_madvise", lambda: lambda *a: calls.append(a))
    small = pages.empty_like(torch.empty(10, 10, dtype=torch.float64))
    assert small.shape == (10, 10) and small.dtype == torch.float64 and not calls
    monkeypatch.setattr(pages, "_madvise", lambda: None)
    assert pages.empty_like(torch.empty(300, 1 << 16)).shape == (300, 1 << 16)


def test_the_real_madvise_is_found_or_cleanly_absent():
    pages._madvise.cache_clear()
    f = pages._madvise()
    assert f is None or callable(f)
    pages._madvise.cache_clear()
