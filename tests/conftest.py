import os

# Small CPU models: default threading on 2 cores makes them much slower, not faster.
os.environ.setdefault('OMP_NUM_THREADS', '1')

import torch  # noqa: E402

torch.set_num_threads(int(os.environ['OMP_NUM_THREADS']))

