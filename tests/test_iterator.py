import numpy as np
import pytest

from common import iterator


def _indices(n=1000, batch=64, seed=7, epoch=0):
    x = np.arange(n)
    return [xb.copy() for xb, _ in iterator.train_batches(x, x * 10, batch, seed, epoch)]


def test_same_seed_same_batches():
    first, second = _indices(), _indices()
    assert len(first) == len(second)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_other_seed_or_epoch_other_order():
    base = np.concatenate(_indices())
    assert not np.array_equal(base, np.concatenate(_indices(seed=8)))
    assert not np.array_equal(base, np.concatenate(_indices(epoch=1)))


def test_order_depends_on_epoch_not_history():
    # epoch 3's order is the same whether or not epochs 0-2 were drawn before it
    x = np.arange(500)
    for epoch in range(3):
        list(iterator.train_batches(x, x, 32, 5, epoch))
    after = np.concatenate([b for b, _ in iterator.train_batches(x, x, 32, 5, 3)])
    fresh = np.concatenate([b for b, _ in iterator.train_batches(x, x, 32, 5, 3)])
    assert np.array_equal(after, fresh)


def test_training_batches_are_complete():
    batches = _indices(n=1000, batch=64)
    assert len(batches) == 1000 // 64 == iterator.batches_per_epoch(1000, 64)
    assert {len(b) for b in batches} == {64}


def test_each_epoch_is_a_permutation():
    for epoch in range(3):
        seen = np.concatenate(_indices(n=1000, batch=64, epoch=epoch))
        assert len(set(seen.tolist())) == len(seen)  # no sample twice
        left_out = sorted(set(range(1000)) - set(seen.tolist()))
        assert len(left_out) == 1000 % 64
        order = iterator.epoch_order(1000, 7, epoch)
        assert np.array_equal(seen, order[: len(seen)])
        assert np.array_equal(np.sort(order), np.arange(1000))


def test_labels_travel_with_their_samples():
    x = np.arange(300)
    for xb, yb in iterator.train_batches(x, x * 10, 16, 1, 0):
        assert np.array_equal(yb, xb * 10)


def test_test_batches_cover_everything_in_order():
    x = np.arange(1000)
    batches = list(iterator.test_batches(x, 64))
    assert np.array_equal(np.concatenate(batches), x)
    assert len(batches[-1]) == 1000 % 64


@pytest.mark.parametrize("batch", [0, 2000])
def test_bad_batch_size_is_refused(batch):
    x = np.arange(1000)
    with pytest.raises(ValueError, match=str(batch)):
        list(iterator.train_batches(x, x, batch, 0, 0))


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="999"):
        list(iterator.train_batches(np.arange(1000), np.arange(999), 10, 0, 0))
