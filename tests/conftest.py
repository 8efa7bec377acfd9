import os
import sys

import torch

# Tiny models gain nothing from intra-op threads, and threads that spin while other processes hold
# the two cores make matrix products 100x slower.
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(__file__))
