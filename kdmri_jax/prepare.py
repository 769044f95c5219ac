"""Prepare a dataset in the KD-MRI reference layout from fully-sampled volumes.

  python -m kdmri_jax.prepare --input VOLUMES --dataset brain --acc 4x 5x 8x --out ROOT \
      [--mask-dir DIR | --mask-family dccnn] [--mask-seed 172] [--split 0.8] [--seed 0] \
      [--size H W] [--overwrite]

VOLUMES are files or folders (searched recursively) of NIfTI (.nii/.nii.gz, slices along the last
axis), .npy (S×H×W), h5 with --key (S×H×W), reference-layout h5 ('volfs', H×W×S; point --input at
one acc_* folder, as every acc folder holds the same targets) or fastMRI h5 ('kspace' +
'reconstruction_esc'). `--phantom N` makes N seeded ellipse-phantom volumes instead (any --size).
Targets are normalised per volume (max 1), volumes split train/validation by a seeded permutation,
each acceleration undersampled with the masks in --mask-dir (mask_{acc}.npy) or seeded masks of
--mask-family: 1-D Cartesian (whole rows; whole columns for knee; default "dccnn", the authors'
kind; fastMRI's random/equispaced/magic kinds) or 2-D point masks (gaussian_2d, poisson_disc); see
`kdmri_jax.masks`, zero-filled = |IFFT2(m·FFT2(target))|. Writes ROOT/{train,validation}/
acc_{acc}/*.h5, ROOT/masks/mask_{acc}.npy and ROOT/manifest.json; an existing ROOT is kept unless
--overwrite, except a damaged one (a missing or unreadable manifest, mask or h5 file), which is
moved aside to ROOT.damaged-<unix time> and written again; what a killed run left beside ROOT is
cleaned up first (`kdmri_jax.data.writer`).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import Sequence

import numpy as np

from kdmri_jax import masks
from kdmri_jax.errors import require, require_writable_output, run_cli

KNOWN_DATASETS = ("brain", "cardiac", "knee")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    prog="python -m kdmri_jax.prepare", description=__doc__.split("\n\n")[0]
  )
  _add_source_args(parser)
  _add_mask_args(parser)
  _add_layout_args(parser)
  parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
  return parser.parse_args(list(argv))


def _add_source_args(parser: argparse.ArgumentParser) -> None:
  """What is read (--input or --phantom), as which dataset, into which --out."""
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--input", nargs="+", help="volume files or folders")
  source.add_argument(
    "--phantom", type=int, metavar="N", help="make N seeded ellipse-phantom volumes"
  )
  parser.add_argument(
    "--dataset",
    required=True,
    help="brain | cardiac | knee (sets the mask direction and knee's one-slice files) or "
    "another name",
  )
  parser.add_argument("--out", required=True, help="dataset root to create")
  parser.add_argument("--key", help="array key of plain h5 files")
  parser.add_argument(
    "--slice-axis", type=int, help="slice axis of the input files (see module doc)"
  )
  parser.add_argument(
    "--fastmri-target",
    default="auto",
    choices=("auto", "esc", "rss", "kspace"),
    help="fastMRI target: stored reconstruction or |IFFT(kspace)| (auto: esc, rss, kspace)",
  )
  parser.add_argument("--slices", type=int, default=8, help="slices per phantom volume (8)")


def _add_mask_args(parser: argparse.ArgumentParser) -> None:
  """The accelerations and their masks: read from --mask-dir or generated."""
  parser.add_argument(
    "--acc", nargs="+", default=["4x", "5x", "8x"], help="accelerations (default 4x 5x 8x)"
  )
  parser.add_argument(
    "--mask-dir", help="folder with mask_{acc}.npy (H×W, 0/1, unshifted); default: generate"
  )
  # No default: main refuses it beside --mask-dir, and uses masks.DEFAULT_FAMILY without it.
  parser.add_argument(
    "--mask-family",
    default=None,
    help=f"generated masks: {' | '.join(masks.MASK_FAMILIES)} (default "
    f"{masks.DEFAULT_FAMILY}, the authors' DC-CNN style)",
  )
  parser.add_argument(
    "--mask-seed",
    type=int,
    default=masks.DEFAULT_MASK_SEED,
    help=f"seed of the generated masks ({masks.DEFAULT_MASK_SEED}: the draw "
    f"with the authors' brain statistics)",
  )
  parser.add_argument(
    "--direction",
    choices=("rows", "columns"),
    help="mask lines (default: columns for knee, rows otherwise)",
  )


def _add_layout_args(parser: argparse.ArgumentParser) -> None:
  """The split, the slice size and the files' layout."""
  parser.add_argument(
    "--split", type=float, default=0.8, help="fraction of volumes for training (0.8)"
  )
  parser.add_argument("--seed", type=int, default=0, help="seed of the train/validation split (0)")
  parser.add_argument(
    "--size", type=int, nargs=2, metavar=("H", "W"), help="centre-crop/pad slices to H×W"
  )
  parser.add_argument(
    "--per-slice",
    action=argparse.BooleanOptionalAction,
    default=None,
    help="one H×W slice per file (default: on for knee, as the reference data)",
  )


def read_input(path: str, args: argparse.Namespace) -> np.ndarray:
  """One input file as (S, H, W) magnitude slices."""
  from kdmri_jax.data import fastmri, volumes

  if volumes.kind_of(path) == "h5" and args.key is None:
    keys = volumes.h5_keys(path)
    if "volfs" in keys:  # a reference-layout file: re-derive everything from its target
      return volumes.read_h5(path, "volfs", args.slice_axis)
    if "kspace" in keys:
      return fastmri.read_fastmri(path, args.fastmri_target, crop=args.size)
  return volumes.read_any(path, args.key, args.slice_axis)


def unique_name(path: str, taken: set[str]) -> str:
  base = os.path.basename(path)
  for suffix in (".nii.gz", ".nii", ".npy", ".h5", ".hdf5", ".mat"):
    if base.lower().endswith(suffix):
      base = base[: -len(suffix)]
      break
  name, number = base, 1
  while name in taken:
    number += 1
    name = f"{base}_{number}"
  taken.add(name)
  return name


def collect(args: argparse.Namespace) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """{name: (S,H,W)} volumes and {name: source file} from --input or --phantom."""
  from kdmri_jax.data import phantom, volumes

  if args.phantom is not None:
    require(args.phantom >= 1, f"--phantom {args.phantom} must be at least 1.")
    require(args.size is not None, "--phantom needs --size H W (e.g. 150 150 for cardiac).")
    made = phantom.phantom_volumes(args.phantom, tuple(args.size), args.slices, args.seed)
    return made, {name: f"phantom(seed={args.seed})" for name in made}
  files = [f for root in args.input for f in volumes.find_files(root)]
  loaded, sources, taken = {}, {}, set()
  for path in files:
    volume = read_input(path, args)
    if args.size is not None:
      volume = volumes.centre_crop_or_pad(volume, tuple(args.size))
    name = unique_name(path, taken)
    loaded[name], sources[name] = volume, os.path.abspath(path)
  return loaded, sources


def _check_existing(out: str, overwrite: bool) -> str | None:
  """Why an existing `out` is a damaged dataset (`outputs.check_existing`: a whole one or another
  folder is refused unless `overwrite`); None when there is none."""
  if not os.path.lexists(out):
    return None
  from kdmri_jax import outputs  # imports the training code: only when there is something to check
  from kdmri_jax.data import writer

  return outputs.check_existing(out, "--out", writer.damage, overwrite)


def _move_aside(out: str, reason: str) -> None:
  """Once the inputs are checked, a damaged dataset makes way for the new one (kept aside)."""
  from kdmri_jax import outputs

  outputs.move_damaged_aside(out, reason, print)


def main(argv: Sequence[str]) -> int:
  from kdmri_jax.data import writer

  args = parse_args(argv)
  require(
    args.mask_dir is None or args.mask_family is None,
    "--mask-dir and --mask-family exclude each other: masks are either read or generated.",
  )
  family = masks.check_family(args.mask_family or masks.DEFAULT_FAMILY, "--mask-family")
  out = require_writable_output(args.out, "--out", "staged-folder")
  writer.clear_leftovers(out, print)
  damaged = _check_existing(out, args.overwrite)
  direction = args.direction or ("columns" if args.dataset == "knee" else "rows")
  per_slice = args.dataset == "knee" if args.per_slice is None else args.per_slice
  loaded, sources = collect(args)
  writer.write_dataset(
    out,
    loaded,
    args.acc,
    split=args.split,
    seed=args.seed,
    direction=direction,
    mask_dir=args.mask_dir,
    overwrite=args.overwrite or damaged is not None,  # a damaged one is moved aside first
    one_slice_per_file=per_slice,
    sources=sources,
    extra={"dataset": args.dataset},
    mask_family=family,
    mask_seed=args.mask_seed,
    before_writing=None if damaged is None else functools.partial(_move_aside, out, damaged),
  )
  import json

  with open(os.path.join(out, "manifest.json")) as handle:
    manifest = json.load(handle)
  counts = manifest["counts"]
  print(
    f"wrote {out}: {counts['train']['volumes']} train volumes ({counts['train']['slices']} "
    f"slices), {counts['validation']['volumes']} validation volumes "
    f"({counts['validation']['slices']} slices) of {manifest['shape'][0]}×{manifest['shape'][1]}; "
    f"masks ({args.mask_dir or family}):"
  )
  for acc, entry in manifest["masks"].items():
    print(f"  {acc}: {masks.describe(masks.load_mask(os.path.join(out, entry['file'])))}")
  return 0


if __name__ == "__main__":
  sys.exit(run_cli(main))
