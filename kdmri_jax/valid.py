"""Inference over a folder of reference h5 volumes, one output h5 per volume (as the authors'
valid.py).

  python -m kdmri_jax.valid --checkpoint CKPT --data-path DIR --mask MASK.npy --out-dir OUT \
    [--acc 4x]

Each `DIR/<name>.h5` in the reference layout (`volfs`, `img_volus_{acc}`, `kspace_volus_{acc}`,
slices last) gives `OUT/<name>.h5` with one dataset, `reconstruction`: S×H×W float32, slices first.
The checkpoint's meta names the model, so there is no --model.

DC-CNN checkpoints read the zero-filled image and k-space of `--acc` (or the only acceleration in
the file) and need the undersampling mask. VDSR (super-resolution) checkpoints read the target
`volfs` and make the low-resolution input from it as training does
(`kdmri_jax.data.sr.low_resolution`, central `--sr-keep` k-space block); they take no mask.
"""

from __future__ import annotations

import glob
import os
import sys
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from kdmri_jax.atomic import write_atomic
from kdmri_jax.errors import cli_parser, require, require_writable_output, run_cli

OUTPUT_KEY = "reconstruction"


def list_inputs(data_path: str | os.PathLike) -> list[str]:
  """Sorted `*.h5` files of a folder (or the file itself)."""
  data_path = os.fspath(data_path)
  require(os.path.exists(data_path), f"--data-path {data_path} does not exist.")
  if os.path.isfile(data_path):
    return [data_path]
  files = sorted(glob.glob(os.path.join(data_path, "*.h5")))
  require(
    bool(files),
    f"--data-path {data_path} holds no .h5 files; point it at a folder of reference "
    f"volumes such as ROOT/validation/acc_4x.",
  )
  return files


def write_reconstruction(
  path: str, reconstruction: np.ndarray, attrs: dict[str, Any] | None = None
) -> None:
  """Writes `reconstruction` (S,H,W float32) as dataset 'reconstruction' of `path`, with `attrs`,
  atomically (no half file remains)."""
  import h5py

  def write(temporary: str) -> None:
    with h5py.File(temporary, "w") as h5file:
      h5file.create_dataset(OUTPUT_KEY, data=np.asarray(reconstruction, np.float32))
      for key, value in (attrs or {}).items():
        h5file.attrs[key] = value

  write_atomic(path, write)


def read_checked(
  path: str, acc: str | None, reconstruction: bool, mask: np.ndarray | None, mask_path: str | None
):
  """One input volume; for a DC-CNN, refused unless `mask` fits it and holds all its k-space samples
  (data undersampled with another mask would get wrong data consistency)."""
  from kdmri_jax import masks
  from kdmri_jax.data import reference

  volume = reference.read_volume(path, acc, require_target=not reconstruction)
  if reconstruction:
    masks.check_mask(mask, volume.shape, name=f"mask file {mask_path}")
    reference.require_kspace_within_mask(volume.kspace, mask, path, mask_path)
  return volume


def run(
  checkpoint: str,
  data_path: str,
  out_dir: str,
  mask_path: str | None = None,
  acc: str | None = None,
  batch_size: int = 8,
  overwrite: bool = False,
  sr_keep: int | None = None,
  progress: bool = True,
) -> list[str]:
  """Reconstructs every volume of `data_path` with the model in `checkpoint`; returns the written
  paths."""
  from tqdm import tqdm

  from kdmri_jax import checkpoints, inference, masks, models

  require(batch_size >= 1, f"--batch-size must be at least 1, got {batch_size}.")
  files = list_inputs(data_path)
  outputs = _output_paths(files, out_dir, overwrite)
  if acc is not None:
    acc = f"{masks.parse_acceleration(acc):g}x"
  # Cheap checks first (meta, first volume, mask), so bad input fails before the model is loaded.
  meta = checkpoints.load_meta(checkpoint)
  reconstruction = models.is_reconstruction(models.build_model(meta["model"]))
  first, mask = _first_volume(files[0], acc, reconstruction, mask_path, checkpoint, meta)
  if not reconstruction:
    sr_keep = _sr_keep(sr_keep, meta)
  model, params, meta = checkpoints.load_params(checkpoint)

  predict = inference.predictor(model, params, batch_size)
  attrs = {"model": meta["model"], "checkpoint": os.path.abspath(checkpoint)}
  volumes = _volumes(files, first, acc, reconstruction, mask, mask_path)
  # disable=None shows a bar on a terminal only; `with` closes it before an error line is printed.
  with tqdm(
    total=len(files), desc="volumes", unit="vol", disable=None if progress else True
  ) as bar:
    for volume, out_path in zip(volumes, outputs):
      result, made_with = _predict_volume(predict, model, volume, reconstruction, mask, sr_keep)
      attrs.update(made_with)
      os.makedirs(out_dir, exist_ok=True)
      write_reconstruction(out_path, result, attrs)
      bar.update()
  return outputs


def _output_paths(files: Sequence[str], out_dir: str, overwrite: bool) -> list[str]:
  """`out_dir/<name>.h5` for every input file; refused if one exists (unless `overwrite`) or if
  `out_dir` is a file."""
  require(not os.path.isfile(out_dir), f"--out-dir {out_dir} is a file; pass a directory.")
  outputs = [os.path.join(out_dir, os.path.basename(path)) for path in files]
  existing = [path for path in outputs if os.path.exists(path)]
  require(
    overwrite or not existing,
    f"output {existing[0] if existing else ''} already exists; choose another "
    f"--out-dir or pass --overwrite.",
  )
  return outputs


def _first_volume(
  path: str,
  acc: str | None,
  reconstruction: bool,
  mask_path: str | None,
  checkpoint: str,
  meta: dict[str, Any],
):
  """(first input volume, mask or None): a DC-CNN needs `mask_path`, a mask of the volume's shape
  holding all its k-space samples."""
  from kdmri_jax import masks
  from kdmri_jax.data import reference

  first = reference.read_volume(path, acc, require_target=not reconstruction)
  if not reconstruction:
    return first, None
  require(
    mask_path is not None,
    f"checkpoint {checkpoint} holds a DC-CNN ({meta['model']!r}), which needs "
    f"the undersampling mask: pass --mask MASK.npy.",
  )
  mask = masks.load_mask(mask_path, shape=first.shape)
  reference.require_kspace_within_mask(first.kspace, mask, path, mask_path)
  return first, mask


def _sr_keep(sr_keep: int | None, meta: dict[str, Any]) -> int:
  """The central k-space block a VDSR input keeps: `--sr-keep`, else the checkpoint's, else 64."""
  from kdmri_jax.data import sr

  return int(sr_keep or meta.get("sr_keep") or sr.DEFAULT_KEEP)


def _volumes(
  files: Sequence[str],
  first: Any,
  acc: str | None,
  reconstruction: bool,
  mask: np.ndarray | None,
  mask_path: str | None,
) -> Iterator[Any]:
  """The volumes of `files` in order, each read when it is wanted: `first`, read and checked before
  the model was loaded, then the others through `read_checked`."""
  yield first
  for path in files[1:]:
    yield read_checked(path, acc, reconstruction, mask, mask_path)


def _predict_volume(
  predict: Callable[..., np.ndarray],
  model: Any,
  volume: Any,
  reconstruction: bool,
  mask: np.ndarray | None,
  sr_keep: int | None,
) -> tuple[np.ndarray, dict[str, Any]]:
  """(S,H,W reconstruction, attrs saying how it was made): a DC-CNN's from the zero-filled image
  (complex from the k-space where the model takes complex images) and k-space, a VDSR's from the
  low-resolution image of the target."""
  if not reconstruction:
    from kdmri_jax.data import sr

    return predict(sr.low_resolution(volume.target, sr_keep)), {"sr_keep": sr_keep}
  image = volume.input
  if getattr(model, "complex_images", False):
    image = np.fft.ifft2(volume.kspace, norm="ortho").astype(np.complex64)
  return predict(image, volume.kspace, mask), {"acc": volume.acc}


def main(argv: Sequence[str] | None = None) -> int:
  parser = cli_parser("kdmri_jax.valid", __doc__)
  parser.add_argument(
    "--checkpoint", required=True, help="kdmri_jax checkpoint (training stage, convert --out)"
  )
  parser.add_argument(
    "--data-path", required=True, help="folder of reference h5 volumes (or one file)"
  )
  parser.add_argument(
    "--mask", default=None, help="undersampling mask .npy (H×W, 0/1, unshifted); DC-CNN only"
  )
  parser.add_argument(
    "--out-dir", required=True, help="folder for OUT/<name>.h5 with dataset 'reconstruction'"
  )
  parser.add_argument(
    "--acc", default=None, help="acceleration key, e.g. 4x (default: the only one in each file)"
  )
  parser.add_argument("--batch-size", type=int, default=8, help="slices per model call")
  parser.add_argument(
    "--sr-keep", type=int, default=None, help="VDSR only: central k-space block kept (64)"
  )
  parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
  args = parser.parse_args(argv)
  require_writable_output(args.out_dir, "--out-dir", "folder")
  outputs = run(
    args.checkpoint,
    args.data_path,
    args.out_dir,
    args.mask,
    args.acc,
    args.batch_size,
    args.overwrite,
    args.sr_keep,
  )
  print(f"wrote {len(outputs)} reconstruction(s) to {os.path.abspath(args.out_dir)}")
  return 0


if __name__ == "__main__":
  sys.exit(run_cli(main))
