"""tlkit.device: trim_heap gives freed memory back; releasing_memory trims on a CPU only."""
import pytest
import torch

from tlkit import device as tdevice
from tlkit.device import releasing_memory, trim_heap


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(tdevice._malloc_trim() is None, reason="needs glibc (Linux)")
def test_trim_heap_returns_freed_heap_memory_to_the_os():
    # 3,000 blocks of 96 KB come from the heap (below glibc's mmap threshold). The last one stays
    # allocated, so the free space lies below it and glibc's automatic trim (top of heap only) keeps it.
    blocks = [bytearray(96 * 1024) for _ in range(3000)]  # ~280 MB, touched (zeroed)
    keep = blocks[-1]
    del blocks
    before = _rss_mb()
    assert trim_heap() is True
    after = _rss_mb()
    assert before - after > 100, (before, after)  # MB; nothing comes back without the trim
    assert len(keep) == 96 * 1024


def test_releasing_memory_yields_every_batch_and_trims_every_nth_on_a_cpu(monkeypatch):
    calls = []
    monkeypatch.setattr(tdevice, "trim_heap", lambda: calls.append(1) or True)
    batches = [(i, -i) for i in range(25)]
    assert list(releasing_memory(iter(batches), torch.device("cpu"), every=10)) == batches
    assert len(calls) == 2  # after batches 10 and 20
    calls.clear()
    assert list(releasing_memory(batches, torch.device("cuda"), every=10)) == batches  # no device is touched
    assert calls == []
