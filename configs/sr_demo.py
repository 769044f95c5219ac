"""The super-resolution pipeline (configs/sr_vdsr.py) at demo size for a few minutes on 2 CPU cores.

Same models, layers and losses; 64×64 targets keeping the central 16×16 of k-space (the paper's 4×
per axis), a subset of the slices and a few epochs. The numbers show the pipeline works end to end;
they are not the paper's.
"""

from __future__ import annotations

from configs import sr_vdsr


def get_config():
  config = sr_vdsr.get_config()
  config.data.image_size = 64
  config.sr.keep = 16
  config.data.max_slices = 64
  config.train.num_epochs = 4
  config.train.lr_step_epochs = 3
  config.train.log_every_steps = 8
  config.train.checkpoint_every_steps = 0  # epoch ends only
  return config
