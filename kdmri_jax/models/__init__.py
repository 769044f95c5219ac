"""The paper's models by name, and the helpers that build, call and count them.

| name           | model | layout                          | parameters |
|----------------|-------|---------------------------------|------------|
| `teacher`      | DCCNN | 5 cascades × 5 convs, 32 filters | 141,765    |
| `student`      | DCCNN | 5 cascades × 3 convs, 32 filters | 49,285     |
| `vdsr_teacher` | VDSR  | 11 convs, 64 filters             | 333,569    |
| `vdsr_student` | VDSR  | 7 convs, 64 filters              | 185,857    |

`models.layout` says where each conv's parameters are: the one naming rule, for the Flax modules and
the authors' PyTorch names alike.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kdmri_jax.errors import InputError
from kdmri_jax.models.dccnn import DCCNN
from kdmri_jax.models.vdsr import VDSR

PRESETS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
  "teacher": (DCCNN, dict(num_cascades=5, num_convs=5, features=32)),
  "student": (DCCNN, dict(num_cascades=5, num_convs=3, features=32)),
  "vdsr_teacher": (VDSR, dict(num_layers=11, features=64)),
  "vdsr_student": (VDSR, dict(num_layers=7, features=64)),
}


def build_model(name: str, **overrides: Any) -> nn.Module:
  """The preset `name` with some fields changed (e.g. `num_cascades=3`, `dtype=jnp.bfloat16`)."""
  if name not in PRESETS:
    raise InputError(f"unknown model {name!r}; choose one of {sorted(PRESETS)}.")
  cls, kwargs = PRESETS[name]
  return cls(**{**kwargs, **overrides})


def model_kwargs(model: nn.Module) -> dict[str, Any]:
  """The dataclass fields that rebuild `model` (JSON-friendly; dtype as its name)."""
  fields = {f: getattr(model, f) for f in model.__dataclass_fields__ if f not in ("parent", "name")}
  if "dtype" in fields:
    fields["dtype"] = jnp.dtype(fields["dtype"]).name
  return fields


def is_reconstruction(model: nn.Module) -> bool:
  """True for DC-CNNs (inputs: zero-filled image, k-space, mask), False for VDSR (input: LR
  image)."""
  return isinstance(model, DCCNN)


def apply(model: nn.Module, params: Any, batch: Mapping[str, jnp.ndarray]):
  """Calls `model` on a batch dict: `input` (B, H, W) and, for DC-CNNs, `kspace` and `mask`.

  Returns (image (B, H, W), features) as the model does.
  """
  if is_reconstruction(model):
    return model.apply({"params": params}, batch["input"], batch["kspace"], batch["mask"])
  return model.apply({"params": params}, batch["input"])


def init_params(model: nn.Module, rng: jax.Array, height: int, width: int) -> Any:
  """Fresh parameters for images of (height, width); values do not depend on the size."""
  image = jnp.zeros((1, height, width), jnp.float32)
  if is_reconstruction(model):
    kspace = jnp.zeros((1, height, width), jnp.complex64)
    mask = jnp.ones((height, width), jnp.float32)
    if model.complex_images:
      image = image.astype(jnp.complex64)
    return model.init(rng, image, kspace, mask)["params"]
  return model.init(rng, image)["params"]


def count_params(params: Any) -> int:
  """Number of scalar parameters in a pytree."""
  return int(sum(np.size(p) for p in jax.tree_util.tree_leaves(params)))
