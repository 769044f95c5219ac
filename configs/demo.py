"""The whole KD-MRI pipeline on the embedded MNI brain at 4x, scaled to about 10 minutes on 2 CPU cores.

Same models, stages and losses as the paper; smaller images (64×64 instead of 240×240), 200 of the 300
training slices and 10 epochs per stage, with the learning-rate step scaled to the shorter schedule. The
numbers show that the pipeline works end to end; they are not the paper's.
"""

from __future__ import annotations

from configs import default


def get_config():
  config = default.get_config()
  config.dataset = "brain"
  config.acc = "4x"
  config.data.image_size = 64
  config.data.max_slices = 200  # evenly spaced slices of the 300 training slices (validation: all 30)
  config.train.num_epochs = 10
  config.train.lr_step_epochs = 8
  config.train.log_every_steps = 10
  config.train.checkpoint_every_steps = 0  # epoch ends only
  return config
