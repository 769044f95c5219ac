"""KD-MRI on cardiac (ACDC 150x150, whole-row masks) at 5x acceleration: the paper's settings
(configs/default.py).

Data: the reference layout `{root}/{train,validation}/acc_5x/*.h5`; pass `--config.data.root=ROOT`;
make ROOT from fully-sampled volumes with `python -m kdmri_jax.prepare --input VOLUMES --dataset
cardiac --acc 5x --out ROOT`.
"""

from __future__ import annotations

from configs import default


def get_config():
  return default.for_dataset("cardiac", "5x")
