"""KD-MRI's super-resolution experiment: VDSR teacher (11 convs, 333,569 parameters) and student (7
convs, 185,857) on 256×256 targets, the low-resolution input keeping the central 64×64 of the
centred k-space (zero-filled, magnitude; `kdmri_jax.data.sr`).

Distillation as the paper: attention transfer between teacher layer 6 and student layer 4 (1-based;
the 0-based paths (5,) and (3,), `config.kd.layer_pairs='paper'`), then imitation with α = 0.5.
Data: the embedded MNI brain resampled to 256×256 (`config.data.image_size`), or
`--config.data.root=ROOT` with 256×256 reference-layout volumes (only their 'volfs' targets are
used).
"""

from __future__ import annotations

from configs import default


def get_config():
  config = default.get_config()
  config.dataset = "brain"
  # only picks which reference folder holds the targets; SR ignores the k-space mask
  config.acc = "4x"
  config.task = "super_resolution"
  config.data.image_size = 256
  config.models.teacher = "vdsr_teacher"
  config.models.student = "vdsr_student"
  config.kd.feature_loss = "attention"
  config.kd.layer_pairs = "paper"  # feature_losses.PAPER_LAYER_PAIRS['vdsr'] = (((5,), (3,)),)
  config.kd.alpha = 0.5
  # central keep×keep of the centred k-space: 256/64 = 4× lower resolution per axis
  config.sr.keep = 64
  return config
