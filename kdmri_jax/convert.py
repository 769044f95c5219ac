"""Import a checkpoint of the authors' PyTorch code (Bala93/KD-MRI) as a kdmri_jax orbax checkpoint.

  python -m kdmri_jax.convert --torch-checkpoint best_model.pt --model teacher --out ckpt/teacher

The authors save `{'epoch', 'args', 'model': state_dict, 'optimizer', ...}`; a bare state_dict
(optionally with DataParallel's `module.` prefix) is accepted too. Key names map one to one:

  DC-CNN  `cascade{c}.conv{j}.{weight,bias}`
            ->  params['cascade_{c-1}']['conv_{j-1}']['kernel'|'bias']
  VDSR    `conv{j}.{weight,bias}`  ->  params['conv_{j-1}']['kernel'|'bias']

with PyTorch's OIHW weights transposed to Flax's HWIO kernels. Convolution is cross-correlation in
both frameworks, so no kernel flip is needed. Files are read with `torch.load(weights_only=True)`,
allowing just the types the authors' dict holds (`authors_pickle_globals`), in both torch.save
formats, pickled by numpy 1 or 2; any other object is refused unless --trust-pickle. torch is needed
for this command only.
"""

from __future__ import annotations

import argparse
import functools
import os
import pathlib
import re
import sys
from typing import Any, Mapping, Sequence

import numpy as np

from kdmri_jax.errors import InputError, cli_parser, require, require_writable_output, run_cli

TORCH_PIN = "torch==2.13.0"


@functools.lru_cache(maxsize=None)
def expected_shapes(model_name: str) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
  """{torch key: (flax param path, torch shape)} for preset `model_name`, in the authors' key order
  (cascade, conv, weight before bias), from `models.layout`."""
  from kdmri_jax import models
  from kdmri_jax.models import layout

  table = {}
  for stack in layout.conv_stacks(models.build_model(model_name)):
    for conv in stack:
      weight_shape = (conv.out_features, conv.in_features, *layout.KERNEL_SIZE)  # OIHW
      table[f"{conv.torch_prefix}.weight"] = (conv.path + ("kernel",), weight_shape)
      table[f"{conv.torch_prefix}.bias"] = (conv.path + ("bias",), (conv.out_features,))
  return table


def _to_numpy(value: Any) -> np.ndarray:
  if hasattr(value, "detach"):  # a torch.Tensor; duck-typed so this module never imports torch
    value = value.detach().cpu()
    if hasattr(value, "float") and str(getattr(value, "dtype", "")) == "torch.bfloat16":
      value = value.float()
    value = value.numpy()
  return np.asarray(value)


def strip_prefix(state_dict: Mapping[str, Any], prefix: str = "module.") -> dict[str, Any]:
  """Drops DataParallel's `module.` prefix when every key has it."""
  keys = list(state_dict)
  if keys and all(isinstance(k, str) and k.startswith(prefix) for k in keys):
    return {k[len(prefix) :]: v for k, v in state_dict.items()}
  return dict(state_dict)


def guess_model(state_dict: Mapping[str, Any]) -> str | None:
  """The preset whose keys and shapes `state_dict` matches exactly, or None."""
  from kdmri_jax import models

  got = {k: tuple(np.shape(_to_numpy(v))) for k, v in state_dict.items()}
  for name in models.PRESETS:
    if got == {k: shape for k, (_, shape) in expected_shapes(name).items()}:
      return name
  return None


def torch_state_dict_to_params(
  model_name: str, state_dict: Mapping[str, Any], source: str = "state_dict"
) -> dict[str, Any]:
  """The authors' state_dict (tensors or arrays) -> kdmri_jax Flax params for preset `model_name`.

  Checks that every expected key is present, no other key is, every shape matches and every value is
  a finite float; the first problem raises `InputError` naming the key, the model and `source`.
  """
  from kdmri_jax import models

  require(
    model_name in models.PRESETS,
    f"unknown model {model_name!r}; choose one of {sorted(models.PRESETS)}.",
  )
  state_dict = strip_prefix(state_dict)
  expected = expected_shapes(model_name)

  def mismatch(detail: str) -> InputError:
    guess = guess_model(state_dict)
    hint = (
      f"it looks like a {guess!r} checkpoint, so pass --model {guess}"
      if guess
      else "check that it was saved by the authors' KD-MRI code for this model"
    )
    return InputError(f"{source} does not hold a {model_name!r} model: {detail}; {hint}.")

  for key in expected:
    if key not in state_dict:
      raise mismatch(f"key '{key}' is missing")
  for key in state_dict:
    if key not in expected:
      raise mismatch(f"key '{key}' is unexpected")

  params: dict[str, Any] = {}
  for key, (names, shape) in expected.items():
    array = _to_numpy(state_dict[key])
    if tuple(array.shape) != shape:
      raise mismatch(f"key '{key}' has shape {tuple(array.shape)}, expected {shape}")
    require(
      array.dtype.kind == "f", f"{source}: key '{key}' holds {array.dtype} values, expected floats."
    )
    require(
      bool(np.all(np.isfinite(array))),
      f"{source}: key '{key}' contains NaN or Inf values; the "
      f"checkpoint is damaged or training diverged.",
    )
    array = array.astype(np.float32)
    if names[-1] == "kernel":
      array = np.ascontiguousarray(array.transpose(2, 3, 1, 0))  # OIHW -> HWIO
    node = params
    for name in names[:-1]:
      node = node.setdefault(name, {})
    node[names[-1]] = array
  return params


def _import_torch():
  try:
    import torch
  except ImportError:
    raise InputError(
      f"converting a PyTorch checkpoint needs PyTorch, which is not installed; "
      f"install the CPU build with `pip install {TORCH_PIN} --index-url "
      f"https://download.pytorch.org/whl/cpu` (only `convert` needs it)."
    ) from None
  return torch


def authors_pickle_globals() -> list[tuple[Any, str]]:
  """(object, name in the pickle) for each Python type the authors' checkpoints hold but tensors.

  `args` is an argparse.Namespace whose `exp_dir`, like the top-level `exp_dir`, is a pathlib
  path; `best_dev_loss` comes from `np.mean`, a numpy float64 pickled as
  `multiarray.scalar(dtype, bytes)` under `numpy.core` (numpy 1) or `numpy._core` (numpy 2). The
  weights-only unpickler looks a GLOBAL up by the name written in the file and never imports it,
  so each object is listed under every name a pickle may use for it. None of them can run code:
  each builds a plain value from strings and bytes.
  """
  try:
    from numpy._core.multiarray import scalar
  except ImportError:  # older numpy 1 has no numpy._core alias
    from numpy.core.multiarray import scalar
  pairs = [(argparse.Namespace, "argparse.Namespace"), (np.dtype, "numpy.dtype")]
  pairs += [(scalar, f"{package}.multiarray.scalar") for package in ("numpy.core", "numpy._core")]
  for dtype in (np.float64, np.float32, np.int64):  # restoring a dtype's state needs its class
    dtype_class = type(np.dtype(dtype))
    pairs.append((dtype_class, f"{dtype_class.__module__}.{dtype_class.__qualname__}"))
  for name in ("Path", "PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath"):
    path_class = _loadable_path_class(name)
    # Python 3.13 moved the classes to pathlib._local, so newer pickles may name that module.
    pairs += [(path_class, f"pathlib.{name}"), (path_class, f"pathlib._local.{name}")]
  return pairs


def _loadable_path_class(name: str) -> type:
  """pathlib's class `name`, or its pure flavour where this OS cannot create it, so that an
  `exp_dir` saved on Windows still loads on Linux (and the reverse)."""
  foreign = "PosixPath" if os.name == "nt" else "WindowsPath"
  return getattr(pathlib, f"Pure{name}" if name == foreign else name)


def _refusal(path: str, message: str) -> InputError:
  """One sentence for a weights-only load that failed with `message`."""
  refused = re.search(r"GLOBAL (\S+)", message)
  if refused is None and not re.search(r"Can only|unrecognized function", message):
    return InputError(f"{path} is not a PyTorch checkpoint (torch.load cannot read it).")
  what = f"a {refused[1]} object" if refused else "Python objects"
  return InputError(
    f"PyTorch checkpoint {path} holds {what}, which is none of the types the "
    f"authors' checkpoints hold (tensors, argparse.Namespace, pathlib paths, "
    f"numpy scalars), and unpickling other objects can run code, so it was not "
    f"loaded; if you trust the file, add --trust-pickle."
  )


def read_torch_checkpoint(path: str | os.PathLike, trust_pickle: bool = False) -> Any:
  """The object a `.pt` file holds, loaded with `weights_only=True` and `authors_pickle_globals()`
  allowed, or with `weights_only=False` when `trust_pickle`. Reads both torch.save formats."""
  path = os.fspath(path)
  require(os.path.isfile(path), f"PyTorch checkpoint {path} does not exist.")
  torch = _import_torch()
  import pickle

  try:
    if trust_pickle:
      return torch.load(path, map_location="cpu", weights_only=False)
    with torch.serialization.safe_globals(authors_pickle_globals()):
      return torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError as error:
    raise _refusal(path, str(error)) from None
  except Exception as error:  # torch raises EOFError, KeyError, ... for non-checkpoints
    raise InputError(
      f"{path} is not a PyTorch checkpoint (torch.load failed: {type(error).__name__})."
    ) from None


def state_dict_of(checkpoint: Any, path: str | os.PathLike) -> dict[str, Any]:
  """The state_dict in a loaded checkpoint: the authors' `model` entry, a `state_dict` entry, or the
  checkpoint itself when it is a bare state_dict."""
  state_dict = checkpoint
  if isinstance(checkpoint, Mapping):
    state_dict = next(
      (
        checkpoint[key]
        for key in ("model", "state_dict")
        if isinstance(checkpoint.get(key), Mapping)
      ),
      checkpoint,
    )
  require(
    isinstance(state_dict, Mapping)
    and len(state_dict) > 0
    and all(hasattr(v, "shape") for v in state_dict.values()),
    f"PyTorch checkpoint {os.fspath(path)} holds neither "
    f"a state_dict nor a dict with a 'model' state_dict.",
  )
  return dict(state_dict)


def load_torch_checkpoint(path: str | os.PathLike, trust_pickle: bool = False) -> dict[str, Any]:
  """The state_dict in a `.pt` file (see `read_torch_checkpoint` and `state_dict_of`)."""
  return state_dict_of(read_torch_checkpoint(path, trust_pickle), path)


def training_record(checkpoint: Any) -> dict[str, Any]:
  """The authors' `epoch` and `best_dev_loss` as JSON numbers, for the converted meta."""
  if not isinstance(checkpoint, Mapping):  # not a dict: no entries to record
    return {}
  record = {}
  for meta_key, key in (("torch_epoch", "epoch"), ("torch_best_dev_loss", "best_dev_loss")):
    value = checkpoint.get(key)
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
      record[meta_key] = value.item() if isinstance(value, np.generic) else value
  return record


def convert(
  torch_checkpoint: str | os.PathLike,
  model_name: str,
  out: str | os.PathLike,
  overwrite: bool = False,
  trust_pickle: bool = False,
) -> str:
  """Converts a PyTorch checkpoint file to an orbax checkpoint at `out`; returns `out`'s absolute
  path.

  Everything is checked before anything is written, so a bad input leaves `out` untouched.
  """
  from kdmri_jax import checkpoints, models

  require(
    model_name in models.PRESETS,
    f"unknown --model {model_name!r}; choose one of {sorted(models.PRESETS)}.",
  )
  out = os.path.abspath(out)
  require(
    overwrite or not (os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out))),
    f"output {out} already exists; choose a new --out or pass --overwrite.",
  )
  require(not os.path.isfile(out), f"output {out} is a file; --out must be a directory.")
  checkpoint = read_torch_checkpoint(torch_checkpoint, trust_pickle)
  state_dict = state_dict_of(checkpoint, torch_checkpoint)
  params = torch_state_dict_to_params(
    model_name, state_dict, source=f"PyTorch checkpoint {torch_checkpoint}"
  )
  model = models.build_model(model_name)
  meta = checkpoints.make_meta(
    model_name,
    model,
    source="pytorch",
    torch_checkpoint=os.path.abspath(torch_checkpoint),
    **training_record(checkpoint),
  )
  return checkpoints.save_params(out, params, meta, overwrite=overwrite)


def main(argv: Sequence[str] | None = None) -> int:
  parser = cli_parser("kdmri_jax.convert", __doc__)
  parser.add_argument(
    "--torch-checkpoint", required=True, help="the authors' best_model.pt (or a state_dict)"
  )
  parser.add_argument(
    "--model", required=True, choices=["teacher", "student", "vdsr_teacher", "vdsr_student"]
  )
  parser.add_argument("--out", required=True, help="directory for the orbax checkpoint")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
  parser.add_argument(
    "--trust-pickle",
    action="store_true",
    help="load with weights_only=False (only for files you trust)",
  )
  args = parser.parse_args(argv)
  require_writable_output(args.out, "--out", "folder")
  out = convert(args.torch_checkpoint, args.model, args.out, args.overwrite, args.trust_pickle)
  print(f"wrote {args.model} checkpoint to {out}")
  return 0


if __name__ == "__main__":
  sys.exit(run_cli(main))
