"""The reduced CPU setting of the brain reproduction: the whole pipeline at 64×64, every stage
trained.

Same models, stages and losses as the paper, each stage trained here on the same schedule: smaller
images (64×64 instead of 240×240), 200 of the 300 training slices and 10 epochs per stage, with the
learning-rate step scaled to the shorter schedule. `python -m experiments.reproduce_brain
--setting cpu` runs it per acceleration and seed (experiments/results/brain_cpu.md). configs/demo.py
is this config with a teacher trained beforehand.
"""

from __future__ import annotations

from configs import default


def get_config():
  config = default.get_config()
  config.dataset = "brain"
  config.acc = "4x"
  config.data.image_size = 64
  # evenly spaced slices of the 300 training slices (validation: all 30)
  config.data.max_slices = 200
  config.train.num_epochs = 10
  config.train.lr_step_epochs = 8
  config.train.log_every_steps = 10
  config.train.checkpoint_every_steps = 0  # epoch ends only
  return config
