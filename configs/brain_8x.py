"""KD-MRI on brain (240x240, whole-row masks) at 8x: the paper's settings (configs/default.py).

Data: the embedded MNI ICBM152 brain (built once, no download) unless `--config.data.root=ROOT`
names a folder in the reference layout `ROOT/{train,validation}/acc_8x/*.h5` (e.g. MRBrainS prepared
with `python -m kdmri_jax.prepare`).
"""

from __future__ import annotations

from configs import default


def get_config():
  return default.for_dataset("brain", "8x")
