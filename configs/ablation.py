"""The paper's ablation of KD-MRI's two parts, attention transfer (AT) and imitation, for any base config.

Usage (big_vision style, `config.py:arg`): `--config configs/ablation.py:BASE,VARIANT`, e.g.
`configs/ablation.py:brain_4x,imitation_only`. BASE is any config in configs/ with a plain `get_config()`
(brain_4x, cardiac_8x, demo, sr_vdsr, ...). Each variant trains the teacher first (skipped when the
workdir's `teacher/done` exists, so one teacher serves every variant) and evaluates ZF and its own student:

| VARIANT               | stages after the teacher | KD stage                                          |
|-----------------------|--------------------------|---------------------------------------------------|
| `student`             | student                  | none: the student alone, L1(x_S, y)               |
| `imitation_only`      | student, kd              | from the student baseline, α = 0.5, no AT         |
| `feature_only`        | feature, kd              | from the AT student, α = 1: fine-tune on L1(x_S, y)|
| `attention_imitation` | feature, kd              | from the AT student, α = 0.5 (the paper)          |

`feature_only` fine-tunes with the reconstruction loss alone because the AT stage trains only the layers
up to the distilled conv: its student does not reconstruct until the remaining layers are trained, and
α = 1 adds no imitation of the teacher's output. Variants write the same stage folders (kd/ differs), so
give each its own --workdir; `experiments/ablation.py` does that and shares one teacher between them.
"""

from __future__ import annotations

from configs.methods import base_config, split_arg
from kdmri_jax.errors import InputError

# variant -> (stages after the teacher, stages evaluated, kd.init_from, kd.alpha)
VARIANTS = {
    "student": ("student", "teacher,student", "student", None),
    "imitation_only": ("student,kd", "kd", "student", 0.5),
    "feature_only": ("feature,kd", "kd", "feature", 1.0),
    "attention_imitation": ("feature,kd", "kd", "feature", 0.5),
}


def get_config(arg: str | None = None):
  base, variant = split_arg(arg, "brain_4x", "VARIANT", "configs/ablation.py:brain_4x,imitation_only")
  if variant not in VARIANTS:
    raise InputError(f"unknown ablation variant {variant!r}; choose one of {list(VARIANTS)}.")
  stages, evaluated, init_from, alpha = VARIANTS[variant]
  config = base_config(base)
  config.stages = f"teacher,{stages},evaluate"
  config.evaluate.stages = evaluated
  config.kd.init_from = init_from
  config.kd.feature_loss = "attention"
  config.kd.layer_pairs = "paper"
  if alpha is not None:
    config.kd.alpha = alpha
  return config
