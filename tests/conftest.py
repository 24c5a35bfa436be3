"""Suite-wide settings: one torch thread (2-core machines; small ops get slower with more)."""

import torch

torch.set_num_threads(1)
