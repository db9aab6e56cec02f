"""``python -m ml train`` for tests/ml/test_ddp.py, with the cyclic garbage collector off, that then
checks no DistributedDataParallel wrapper (which holds the process group) outlived train().

A wrapper left to a GC pass can be freed during interpreter shutdown, and gloo's threads then
abort the rank now and then; with the collector off the leak shows every time instead of 1 run in 10.
"""

import gc
import os
import sys

gc.disable()

from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from ml.__main__ import main  # noqa: E402

main(["train", *sys.argv[1:]])
left = sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())
if left:
    print(f"rank {os.environ.get('RANK')}: {left} DistributedDataParallel object(s) alive after train()", flush=True)
    sys.exit(3)
