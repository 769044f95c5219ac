"""Student-friendly teacher (SFT) training, after SFT-KD-Recon (Matcha et al., "Learning a
Student-friendly Teacher for Knowledge Distillation in MRI Reconstruction", the KD-MRI authors'
follow-up; github.com/GayathriMatcha/SFT-KD-Recon).

The teacher DC-CNN trains together with student branches. Branch k (k = 1 … N−1, N cascades)
takes the teacher's output after its cascade k (data consistency applied) and runs the student's
cascades k+1 … N on it, so that the teacher's first k blocks learn to hand over something the
student's later blocks can finish. The student's first cascade belongs to no branch. The teacher
stage's loss (`config.sft.enabled`) has three terms:

  L = d(x_T, y) + w_b · mean_k d(x_Sk, y) + w_a · mean_k a(x_Sk, x_T)

with d the reconstruction loss (`config.train.loss`, L1 by default), w_b =
`config.sft.branch_weight`, w_a = `config.sft.agreement_weight`, and a the L1 agreement of each
branch with the teacher's output: a mean ('mean', as the follow-up describes it) or that mean
divided by the output's number of elements ('per_numel', as their train_base_modelSFTN.py computes
it). Nothing is held constant: every term's gradient reaches the teacher. Only the teacher leaves
the stage (`best/` holds a plain teacher), so the feature and KD stages distil from it as from any
teacher; the branches are dropped.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from kdmri_jax import models
from kdmri_jax.errors import InputError
from kdmri_jax.losses import Distance, l1

AGREEMENTS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
  "mean": l1,
  "per_numel": lambda branch, teacher: l1(branch, teacher) / branch.size,
}


def check_models(teacher: Any, student: Any) -> None:
  """One sentence unless both models are DC-CNNs with the same number (≥ 2) of cascades."""
  if not (models.is_reconstruction(teacher) and models.is_reconstruction(student)):
    raise InputError(
      "config.sft.enabled needs DC-CNN teacher and student models (config.task='reconstruction'); "
      "set config.sft.enabled=False for super-resolution."
    )
  if teacher.num_cascades != student.num_cascades or teacher.num_cascades < 2:
    raise InputError(
      f"config.sft.enabled needs a teacher and a student with the same number (at least 2) of "
      f"cascades, but they have {teacher.num_cascades} and {student.num_cascades}; change "
      f"config.models.num_cascades."
    )


def _run(
  model: Any, params: Any, image: jax.Array, batch: Mapping[str, jax.Array], first: int, end: int
):
  """`model`'s cascades first … end−1 on `image` (the output of cascade first−1)."""
  part = model.clone(first_cascade=first, num_cascades=end)
  return part.apply({"params": params}, image, batch["kspace"], batch["mask"])[0]


def teacher_outputs(teacher: Any, params: Any, batch: Mapping[str, jax.Array]) -> list[jax.Array]:
  """The teacher's output after each of its cascades (the last one is its reconstruction)."""
  outputs, image = [], batch["input"]
  for cascade in range(teacher.num_cascades):
    image = _run(teacher, params, image, batch, cascade, cascade + 1)
    outputs.append(image)
  return outputs


def branch_outputs(
  student: Any, params: Any, handed_over: list[jax.Array], batch: Mapping[str, jax.Array]
) -> list[jax.Array]:
  """Branch k's reconstruction for k = 1 … N−1: the student's cascades k … N−1 (0-based) run on the
  teacher's output after its k-th cascade, `handed_over[k − 1]`."""
  n = student.num_cascades
  return [_run(student, params, handed_over[k - 1], batch, k, n) for k in range(1, n)]


def init_branches(student: Any, height: int, width: int) -> Callable[[jax.Array], Any]:
  """rng -> fresh parameters of the student's cascades 1 … N−1 (0-based), the branches' blocks."""
  later = student.clone(first_cascade=1)
  return lambda rng: models.init_params(later, rng, height, width)


def loss(
  teacher: Any,
  student: Any,
  recon: Distance,
  branch_weight: float,
  agreement_weight: float,
  agreement: str,
) -> Callable[[Any, Any, Mapping[str, jax.Array]], tuple[jax.Array, dict]]:
  """`loss(teacher_params, branch_params, batch) -> (L, its three terms)`, L as the module says."""
  agree = AGREEMENTS[agreement]

  def value(teacher_params, branch_params, batch):
    handed_over = teacher_outputs(teacher, teacher_params, batch)
    x_t = handed_over[-1].astype(jnp.float32)
    branches = [
      x.astype(jnp.float32) for x in branch_outputs(student, branch_params, handed_over, batch)
    ]
    target = batch["target"]
    teacher_term = recon(x_t, target)
    branch_term = jnp.mean(jnp.stack([recon(x, target) for x in branches]))
    agreement_term = jnp.mean(jnp.stack([agree(x, x_t) for x in branches]))
    total = teacher_term + branch_weight * branch_term + agreement_weight * agreement_term
    return total, {
      "loss": total,
      "teacher": teacher_term,
      "branches": branch_term,
      "agreement": agreement_term,
    }

  return value
