"""The paper's ablation of KD-MRI's two parts, attention transfer (AT) and imitation, for any base
config.

Usage (big_vision style, `config.py:arg`): `--config configs/ablation.py:BASE,VARIANT`, e.g.
`configs/ablation.py:brain_4x,imitation_only`. BASE is any config in configs/ with a plain
`get_config()` (brain_4x, cardiac_8x, demo, sr_vdsr, ...). Each variant trains the teacher first
(skipped when the workdir's `teacher/done` exists, so one teacher serves every variant) and
evaluates ZF and its own student:

| VARIANT               | stages after the teacher | KD stage                                     |
|-----------------------|--------------------------|----------------------------------------------|
| `student`             | student                  | none: the student alone, L1(x_S, y)          |
| `imitation_only`      | student, kd              | from the student baseline, α = 0.5, no AT    |
| `feature_only`        | feature, kd              | from the AT student, α = 1: L1(x_S, y) alone |
| `attention_imitation` | feature, kd              | from the AT student, α = 0.5 (the paper)     |

The imitation rows use the base config's `config.kd.imitation` (the paper's α-weighted sum unless
changed, e.g. to the authors' code's `authors_code`); `feature_only` sets the paper's objective with
α = 1, L1(x_S, y) alone, which is also what the authors' shipped script trains (`authors_script`).

`feature_only` fine-tunes with the reconstruction loss alone because the AT stage trains only the
layers up to the distilled conv: its student does not reconstruct until the remaining layers are
trained, and α = 1 adds no imitation of the teacher's output. Variants write the same stage folders
(kd/ differs), so give each its own --workdir; `experiments/ablation.py` does that and shares one
teacher between them.
"""

from __future__ import annotations

from configs.methods import base_config, split_arg
from kdmri_jax.errors import InputError

# variant -> (stages after the teacher, stages evaluated, kd.init_from, kd.alpha,
#             kd.imitation or None for the base config's)
VARIANTS = {
  "student": ("student", "teacher,student", "student", None, None),
  "imitation_only": ("student,kd", "kd", "student", 0.5, None),
  "feature_only": ("feature,kd", "kd", "feature", 1.0, "paper"),
  "attention_imitation": ("feature,kd", "kd", "feature", 0.5, None),
}


def get_config(arg: str | None = None):
  base, variant = split_arg(
    arg, "brain_4x", "VARIANT", "configs/ablation.py:brain_4x,imitation_only"
  )
  if variant not in VARIANTS:
    raise InputError(f"unknown ablation variant {variant!r}; choose one of {list(VARIANTS)}.")
  stages, evaluated, init_from, alpha, imitation = VARIANTS[variant]
  config = base_config(base)
  config.stages = f"teacher,{stages},evaluate"
  config.evaluate.stages = evaluated
  config.kd.init_from = init_from
  config.kd.feature_loss = "attention"
  config.kd.layer_pairs = "paper"
  if alpha is not None:
    config.kd.alpha = alpha
  if imitation is not None:
    config.kd.imitation = imitation
  return config
