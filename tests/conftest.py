"""Suite-wide settings: one torch thread for every test (small ops on a shared 2-core machine
get up to 20x slower with more)."""

import torch

torch.set_num_threads(1)
