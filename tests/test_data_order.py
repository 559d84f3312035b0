"""The data-order rule every engine calls (``distill.engines.core.data_order``): seeding and
sharding, and that each engine's sampler is that rule."""
import pytest

from distill.engines.core.data_order import derive_seed, seeded_permutation, shard


@pytest.mark.parametrize('size', [1, 5, 6, 7, 13])
@pytest.mark.parametrize('processes', [1, 2, 3, 4])
def test_shard_fits(size, processes):
    order = seeded_permutation(size, 0, 1, 'train')
    exact = [shard(order, r, processes, 'exact') for r in range(processes)]
    assert sorted(sum(exact, [])) == list(range(size))  # every item exactly once
    assert max(map(len, exact)) - min(map(len, exact)) <= 1
    pad = [shard(order, r, processes, 'pad') for r in range(processes)]
    assert len({len(s) for s in pad}) == 1 and len(pad[0]) == -(-size // processes)
    assert set(sum(pad, [])) == set(range(size))  # nothing unread; the first ones again
    dealt = [pad[r][i] for i in range(len(pad[0])) for r in range(processes)]
    assert dealt == (order * processes)[:len(dealt)]  # the order, then its start again
    drop = [shard(order, r, processes, 'drop', 2 * processes) for r in range(processes)]
    assert len({len(s) for s in drop}) == 1
    assert len(drop[0]) * processes == size // (2 * processes) * 2 * processes
    assert sorted(sum(drop, [])) == sorted(order[:len(drop[0]) * processes])


def test_shard_refuses_what_would_make_unequal_or_wrong_shares():
    with pytest.raises(ValueError, match='fit is one of'):
        shard([1, 2], 0, 1, 'wrap')
    with pytest.raises(ValueError, match='rank 2 of 2'):
        shard([1, 2], 2, 2)
    with pytest.raises(ValueError, match='multiple'):
        shard([1, 2, 3], 0, 2, 'drop', 3)


def test_the_seed_is_a_function_of_its_parts_only():
    """``derive_seed`` is numpy's ``SeedSequence`` of the parts, kept to 63 bits: pinned to
    written-out values (a checkpoint's resume relies on the same parts giving the same seed in
    every version), and different when any part (seed, epoch, stream, rank) differs."""
    assert derive_seed(0, 3, 'train') == 3648977645213173551
    assert derive_seed(0, 3, 'train', 1) == 2350224175448717970
    assert derive_seed(5, 2, 'noise', 0) == 3665671174906429118
    seeds = [derive_seed(0, 3, 'train'), derive_seed(0, 4, 'train'), derive_seed(1, 3, 'train'),
             derive_seed(0, 3, 'arch'), derive_seed(0, 3, 'train', 0),
             derive_seed(0, 3, 'train', 1)]
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= seed < 2**63 for seed in seeds)
    order = seeded_permutation(10, 0, 2, 's')
    assert sorted(order) == list(range(10)) and order != list(range(10))
    assert order == seeded_permutation(10, 0, 2, 's') != seeded_permutation(10, 0, 3, 's')


def test_every_engine_shards_by_the_one_rule():
    from distill.engines.classification.data import ShardedBatches
    from distill.engines.diffusion.randomness import EpochShuffleSampler
    from distill.engines.mmengine.sokd_search import ShuffledTrainBatches
    size, processes = 11, 2
    for rank in range(processes):
        train = ShardedBatches(size, 3, True, 5, rank, processes, 'train')
        assert train.indices(2) == shard(seeded_permutation(size, 5, 2, 'train'), rank,
                                         processes, 'pad')
        val = ShardedBatches(size, 3, False, 5, rank, processes, 'val')
        assert val.indices(2) == shard(list(range(size)), rank, processes, 'exact')
        diffusion = EpochShuffleSampler(size, seed=5, epoch=2, batch_size=2, rank=rank,
                                        num_processes=processes)
        expected = shard(seeded_permutation(size, 5, 2, 'shuffle'), rank, processes, 'drop', 4)
        assert list(diffusion) == expected and len(diffusion) == len(expected) == 4
        search = ShuffledTrainBatches(list(range(size)), None, 2, 5, None, rank, processes)
        assert search.order(2) == shard(seeded_permutation(size, 5, 2, 'arch-val'), rank,
                                        processes, 'pad')
