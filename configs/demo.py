"""The KD-MRI pipeline on the embedded MNI brain at 4x on 2 CPU cores, with a teacher trained
beforehand.

configs/brain_cpu.py (64×64 images, 200 of the 300 training slices, 10 epochs per stage, the paper's
models, stages and losses) plus `pretrained_teacher`: the committed teacher in
experiments/pretrained/demo_teacher_4x_64, trained by the project's own command at the same scale
for 40 epochs (its README.md has the command). The teacher stage finds it finished and skips; the
student, the attention-transfer stage and the KD stage train here, then evaluate and report. At this
scale a teacher trained on the students' 10-epoch schedule is no better than the student alone
(experiments/results/brain_cpu.md), so the demo distils a teacher that is; see
experiments/results/demo.md.
"""

from __future__ import annotations

import os

from configs import brain_cpu

TEACHER = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  "experiments",
  "pretrained",
  "demo_teacher_4x_64",
)


def get_config():
  config = brain_cpu.get_config()
  config.pretrained_teacher = TEACHER
  return config
