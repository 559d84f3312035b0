import os

# Small CPU models: default threading on 2 cores makes them much slower, not faster.
os.environ.setdefault('OMP_NUM_THREADS', '1')

import torch  # noqa: E402

torch.set_num_threads(int(os.environ['OMP_NUM_THREADS']))



def pytest_configure(config):
    config.addinivalue_line(
        'markers', 'end_to_end: a long module (runs through the entry points, or compiling; '
                   'seconds each); '
                   'collected first, so that pytest-xdist starts the long modules first and '
                   'the short ones fill in at the end')


def pytest_collection_modifyitems(items):
    """The end-to-end modules first (a stable sort: the order inside each group is kept):
    with --dist loadscope a worker takes whole modules in collection order, and a long module
    taken last leaves the other worker idle."""
    items.sort(key=lambda item: item.get_closest_marker('end_to_end') is None)
