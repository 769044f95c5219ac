"""KD-MRI on knee (640x368, whole-column masks) at 8x acceleration: the paper's settings
(configs/default.py).

Data: the reference layout `{root}/{train,validation}/acc_8x/*.h5`; pass `--config.data.root=ROOT`;
make ROOT from fully-sampled volumes with `python -m kdmri_jax.prepare --input VOLUMES --dataset
knee --acc 8x --out ROOT`.
"""

from __future__ import annotations

from configs import default


def get_config():
  return default.for_dataset("knee", "8x")
