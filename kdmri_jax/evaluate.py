"""Evaluate reconstructions against fully-sampled targets, as the authors' `evaluate.py` does.

  python -m kdmri_jax.evaluate --target-path datasets/mrbrain/validation/acc_4x \
      --predictions-path experiments/brain/acc_4x/dc_kd/results \
      --report-path experiments/brain/acc_4x/dc_kd

Every `*.h5` target file (dataset `volfs`, H×W×S, or H×W for a knee slice) is paired with the
prediction file of the same name (dataset `reconstruction`, S×H×W). Per volume it computes MSE,
NMSE, PSNR, SSIM and HFN (`kdmri_jax.metrics`) and writes into the report folder:
  report.txt              the reference's line: `HFN = m +/- 2·std MSE = ... SSIM = ...`
                          (4 significant digits)
  metrics.json            the inputs, the summary (mean, std, 2·std, n) and every volume's values
  metrics_per_volume.csv  one row per volume
  metrics_per_slice.csv   one row per slice (with --per-slice; R = the volume max, see
                          `slice_metrics`)
Any bad input (missing folder, no or unmatched files, missing dataset, shape mismatch, NaN/inf) is
one error sentence and exit status 2, and nothing is written. Existing outputs are kept unless
--overwrite.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import pathlib
import sys
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from kdmri_jax import metrics
from kdmri_jax.atomic import write_text_atomic
from kdmri_jax.data import h5_read
from kdmri_jax.errors import require, require_writable_output, run_cli
from kdmri_jax.masks import parse_acceleration

TARGET_KEY = "volfs"
PREDICTION_KEY = "reconstruction"
OUTPUT_FILES = ("report.txt", "metrics.json", "metrics_per_volume.csv")
PER_SLICE_FILE = "metrics_per_slice.csv"


# Targets and predictions (`h5_read.Spec`): real S×H×W magnitude images (or one H×W slice).
VOLUME_SPEC = h5_read.Spec(
  kinds="fiu",
  ranks=(2, 3),
  expected="real numbers (a magnitude image)",
  hint="store a real magnitude image of 2 or 3 axes, with finite values",
)


def _read(path: pathlib.Path, key: str, what: str) -> np.ndarray:
  with h5_read.open_file(path) as f:
    require(
      key in f,
      f"{what} file {path} has no dataset '{key}' (it holds {sorted(f.keys())}); "
      f"write the {what} under '{key}'.",
    )
    data = h5_read.read(f, key, str(path), VOLUME_SPEC)
  return data.astype(np.float32, copy=False)


def read_target(path: str | os.PathLike, key: str = TARGET_KEY) -> np.ndarray:
  """A target volume in the reference layout (H×W×S, or H×W for a knee slice) as (S, H, W)."""
  data = _read(pathlib.Path(path), key, "target")
  return data[None] if data.ndim == 2 else np.transpose(data, (2, 0, 1))


def read_prediction(path: str | os.PathLike, key: str = PREDICTION_KEY) -> np.ndarray:
  """A prediction volume (S×H×W, or H×W) as (S, H, W)."""
  data = _read(pathlib.Path(path), key, "prediction")
  return data[None] if data.ndim == 2 else data


def resolve_target_dir(target_path: str | os.PathLike, acc: str | None = None) -> pathlib.Path:
  """The target folder: `target_path/acc_{acc}` when --acc is given and that folder exists, else
  target_path."""
  target_dir = pathlib.Path(target_path)
  require(
    target_dir.is_dir(),
    f"target path {target_dir} is not a folder; pass the folder of target .h5 files.",
  )
  if acc is not None:
    parse_acceleration(acc)
    sub = target_dir / f"acc_{acc}"
    if sub.is_dir():
      return sub
  return target_dir


def match_files(
  target_dir: str | os.PathLike, predictions_dir: str | os.PathLike
) -> list[tuple[str, pathlib.Path, pathlib.Path]]:
  """[(name, target file, prediction file)] for every target `*.h5`, sorted by name."""
  target_dir, predictions_dir = pathlib.Path(target_dir), pathlib.Path(predictions_dir)
  require(
    target_dir.is_dir(),
    f"target path {target_dir} is not a folder; pass the folder of target .h5 files.",
  )
  require(
    predictions_dir.is_dir(),
    f"predictions path {predictions_dir} is not a folder; "
    f"pass the folder of reconstruction .h5 files.",
  )
  targets = sorted(p for p in target_dir.glob("*.h5") if p.is_file())
  require(
    bool(targets),
    f"target path {target_dir} holds no .h5 files; point it at e.g. validation/acc_4x.",
  )
  pairs = []
  for target in targets:
    prediction = predictions_dir / target.name
    require(
      prediction.is_file(),
      f"prediction file {prediction} is missing for target {target}; "
      f"reconstruct every target volume first.",
    )
    pairs.append((target.stem, target, prediction))
  return pairs


def load_pairs(
  pairs: Iterable[tuple[str, pathlib.Path, pathlib.Path]], target_key: str = TARGET_KEY
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
  """Reads each (name, target file, prediction file) as (name, gt (S,H,W), pred (S,H,W)),
  checked."""
  for name, target_file, prediction_file in pairs:
    gt = read_target(target_file, target_key)
    pred = read_prediction(prediction_file)
    require(
      gt.shape == pred.shape,
      f"prediction {prediction_file} has shape {pred.shape} (S×H×W) but target "
      f"{target_file} is {gt.shape} as S×H×W; reconstruct with the target's size.",
    )
    require(
      min(gt.shape[1:]) >= metrics.SSIM_WIN_SIZE,
      f"target {target_file} slices are {gt.shape[1:]}; "
      f"SSIM needs at least {metrics.SSIM_WIN_SIZE}×{metrics.SSIM_WIN_SIZE} pixels.",
    )
    require(
      float(gt.max()) > 0.0,
      f"target {target_file} is all zeros or negative; PSNR and NMSE are undefined.",
    )
    yield name, gt, pred


def evaluate_volumes(
  volumes: Iterable[tuple[str, np.ndarray, np.ndarray]], per_slice: bool = False
) -> dict[str, list[dict[str, Any]]]:
  """Metrics of (name, gt, pred) volumes (S, H, W): {'volumes': [row], 'slices': [row]}.

  A volume row is {'name', 'slices', 'HFN', 'MSE', 'NMSE', 'PSNR', 'SSIM'}; slice rows (only with
  `per_slice`) add 'slice'. Volumes are read one at a time, so memory holds one volume.
  """
  volume_rows, slice_rows = [], []
  for name, gt, pred in volumes:
    values = metrics.volume_metrics(gt, pred)
    volume_rows.append({"name": name, "slices": int(gt.shape[0]), **values})
    if per_slice:
      per = metrics.slice_metrics(gt, pred)
      for i in range(gt.shape[0]):
        slice_rows.append({"name": name, "slice": i, **{k: float(v[i]) for k, v in per.items()}})
  return {"volumes": volume_rows, "slices": slice_rows}


def per_metric(rows: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
  """Columns of metric rows: {metric name: (N,) array}."""
  return {
    name: np.array([row[name] for row in rows], dtype=np.float64) for name in metrics.METRIC_NAMES
  }


def reference_report(rows: Sequence[dict[str, Any]]) -> str:
  """The reference's report.txt line: `NAME = mean +/- 2·std` (format .4g, sorted names, sample
  std)."""
  summary = metrics.summarize_all(per_metric(rows))
  return " ".join(
    f"{name} = {summary[name]['mean']:.4g} +/- {2 * summary[name]['std']:.4g}"
    for name in metrics.METRIC_NAMES
  )


def json_safe(value: Any) -> Any:
  """NaN/inf (e.g. PSNR of identical volumes) as null, so metrics.json stays strict JSON."""
  if isinstance(value, dict):
    return {k: json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  if isinstance(value, float) and not np.isfinite(value):
    return None
  return value


_json_safe = json_safe  # the name kdmri_jax.pipeline used first


def _csv_text(rows: Sequence[dict[str, Any]]) -> str:
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=list(rows[0].keys()), lineterminator="\n")
  writer.writeheader()
  writer.writerows(rows)
  return buffer.getvalue()


def output_paths(report_dir: str | os.PathLike, per_slice: bool = False) -> list[pathlib.Path]:
  names = OUTPUT_FILES + ((PER_SLICE_FILE,) if per_slice else ())
  return [pathlib.Path(report_dir) / name for name in names]


def write_outputs(
  report_dir: str | os.PathLike,
  result: dict[str, list[dict[str, Any]]],
  meta: dict[str, Any] | None = None,
) -> list[pathlib.Path]:
  """Writes report.txt, metrics.json, metrics_per_volume.csv (and metrics_per_slice.csv); returns
  paths."""
  report_dir = pathlib.Path(report_dir)
  report_dir.mkdir(parents=True, exist_ok=True)
  volumes, slices = result["volumes"], result["slices"]
  if not volumes:
    raise ValueError("write_outputs needs at least one evaluated volume")
  summary = metrics.summarize_all(per_metric(volumes))
  for s in summary.values():
    s["two_std"] = 2 * s["std"]
  document = {**(meta or {}), "n_volumes": len(volumes), "summary": summary, "volumes": volumes}
  texts = {
    "report.txt": reference_report(volumes) + "\n",
    "metrics.json": json.dumps(json_safe(document), indent=2, allow_nan=False) + "\n",
    "metrics_per_volume.csv": _csv_text(volumes),
  }
  if slices:
    texts[PER_SLICE_FILE] = _csv_text(slices)
  for name, text in texts.items():
    write_text_atomic(report_dir / name, text)
  return [report_dir / name for name in texts]


def read_metrics(report_dir: str | os.PathLike) -> dict[str, Any] | None:
  """The metrics.json `write_outputs` wrote in `report_dir` (None values for NaN/inf), or None if
  there is none."""
  path = pathlib.Path(report_dir) / "metrics.json"
  if not path.exists():
    return None
  return json.loads(path.read_text())


def _add_folder(parser: argparse.ArgumentParser, flag: str, description: str) -> None:
  """A required folder option, given as a `pathlib.Path`."""
  parser.add_argument(flag, type=pathlib.Path, required=True, help=description)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="python -m kdmri_jax.evaluate",
    description=__doc__.split("\n\n")[0],
    formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  _add_folder(parser, "--target-path", "folder of target .h5 files (dataset 'volfs', H×W×S)")
  _add_folder(
    parser,
    "--predictions-path",
    "folder of prediction .h5 files with the same names (dataset 'reconstruction', S×H×W)",
  )
  _add_folder(
    parser,
    "--report-path",
    "folder for report.txt, metrics.json and the CSV files (created if missing)",
  )
  parser.add_argument(
    "--acc",
    default=None,
    help=(
      "acceleration such as 4x: uses TARGET_PATH/acc_{acc} when it exists; recorded in metrics.json"
    ),
  )
  parser.add_argument(
    "--target-key",
    default=TARGET_KEY,
    help="target dataset name (e.g. img_volus_4x evaluates the zero-filled input)",
  )
  parser.add_argument("--per-slice", action="store_true", help="also write metrics_per_slice.csv")
  parser.add_argument("--overwrite", action="store_true", help="replace existing report files")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  require_writable_output(args.report_path, "--report-path", "folder")
  target_dir = resolve_target_dir(args.target_path, args.acc)
  pairs = match_files(target_dir, args.predictions_path)
  outputs = output_paths(args.report_path, args.per_slice)
  existing = [str(p) for p in outputs if p.exists()]
  require(
    args.overwrite or not existing,
    f"report file {existing[0] if existing else ''} already "
    f"exists; pass --overwrite or another --report-path.",
  )
  # Every volume is read and checked before anything is written, so bad input leaves no partial
  # report.
  result = evaluate_volumes(load_pairs(pairs, args.target_key), per_slice=args.per_slice)
  meta = {
    "target_path": str(target_dir),
    "predictions_path": str(args.predictions_path),
    "target_key": args.target_key,
    "acc": args.acc,
  }
  write_outputs(args.report_path, result, meta)
  line = reference_report(result["volumes"])
  print(f"{len(result['volumes'])} volumes: {line}")
  print(f"wrote {args.report_path / 'report.txt'}")
  return 0


if __name__ == "__main__":
  sys.exit(run_cli(main))
