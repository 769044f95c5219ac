"""KD-MRI on knee (640x368, whole-column masks) at 4x acceleration: the paper's settings
(configs/default.py).

Data: the reference layout `{root}/{train,validation}/acc_4x/*.h5`; pass `--config.data.root=ROOT`;
make ROOT from fully-sampled volumes with `python -m kdmri_jax.prepare --input VOLUMES --dataset
knee --acc 4x --out ROOT`.
"""

from __future__ import annotations

from configs import default


def get_config():
  return default.for_dataset("knee", "4x")
