"""The `report` stage's outputs: the paper's results table, report.md and the qualitative figure.

`results_table` lays out rows (ZF, Teacher, Student, KD, or any named methods) with the columns of
the paper's Table 2 — PSNR and SSIM as mean ± std over the validation volumes — plus NMSE, HFN and
the parameter count. `objectives_section` says which objective trained each row (the imitation
objective and α of KD, the criterion that chose the AT student it started from). `write_report`
wraps them into report.md with the dataset, command, machine and date. `qualitative_figure` draws
the paper's Figure 3 layout: images on top, absolute error maps below with one shared colour scale.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import platform
from typing import Any, Mapping

import numpy as np

from kdmri_jax import metrics
from kdmri_jax.atomic import write_atomic, write_text_atomic

# Column -> decimals of mean and std in the table.
TABLE_COLUMNS = {"PSNR": 2, "SSIM": 4, "NMSE": 4, "HFN": 4}
_HEADERS = {"PSNR": "PSNR (dB)", "SSIM": "SSIM", "NMSE": "NMSE", "HFN": "HFN"}
_PARAM_KEYS = ("params", "parameters")


def _cell(values: Any, digits: int) -> str:
  if values is None:
    return "—"
  s = metrics.summarize(np.atleast_1d(np.asarray(values, dtype=np.float64)))
  if s["n"] == 0:
    return "—"
  text = f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"
  if s["n_nonfinite"]:
    text += f" ({s['n_nonfinite']} inf/NaN left out)"
  return text


def _params_cell(row: Mapping[str, Any]) -> str:
  for key in _PARAM_KEYS:
    if row.get(key) is not None:
      return f"{int(row[key]):,}"
  return "—"


def results_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
  """Markdown table of methods × (PSNR, SSIM, NMSE, HFN as mean ± std, parameters).

  `rows` maps a method name ('ZF', 'Teacher', 'Student', 'KD', ...) in display order to
  {'PSNR': per-volume values, 'SSIM': ..., 'NMSE': ..., 'HFN': ..., 'params': int or None}. A
  missing metric or parameter count shows as '—' (ZF has no parameters). std is the sample standard
  deviation (ddof = 1) over volumes; non-finite values (PSNR = inf of a perfect volume) are left out
  and noted.
  """
  header = ["Method", *(_HEADERS[c] for c in TABLE_COLUMNS), "Parameters"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for name, row in rows.items():
    cells = [
      str(name),
      *(_cell(row.get(c), d) for c, d in TABLE_COLUMNS.items()),
      _params_cell(row),
    ]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


# A stage's best-checkpoint criterion (`train.describe_objective`'s 'best'), in words: 'val_mse' of
# the reconstruction stages, config.kd.feature_best (`train.FEATURE_BEST`) of the feature stage.
BEST_TEXT = {
  "val_mse": "lowest validation MSE to the target",
  "attention_mse": "lowest validation MSE of the teacher/student attention maps "
  "(`attention_mse`, the authors' code)",
  "objective": "lowest validation value of its own feature loss (`objective`)",
}


def _loss_name(loss: str | None) -> str:
  return (loss or "l1").upper()


def _best_text(objective: Mapping[str, Any]) -> str:
  return BEST_TEXT.get(objective.get("best"), f"`{objective.get('best')}`")


def _feature_text(objective: Mapping[str, Any]) -> str:
  weight = objective.get("feature_weight")
  scale = "" if weight in (None, 1) else f" × {weight:g}"
  return (
    f"feature stage, `{objective.get('feature_loss')}`{scale} on layer pairs "
    f"`{objective.get('layer_pairs')}`, best checkpoint by {_best_text(objective)}"
  )


def _kd_text(objective: Mapping[str, Any]) -> str:
  text = f"imitation `{objective.get('imitation')}`: {objective.get('formula')}"
  alpha = objective.get("alpha")  # recorded only for an objective that uses it
  text += " (α not used)" if alpha is None else f", α = {alpha:g}"
  loss = _loss_name(objective.get("loss"))
  if loss != "L1":
    text += f", with {loss} in place of L1"
  if objective.get("kd_feature_weight"):
    text += f", plus {objective['kd_feature_weight']:g} × the feature loss"
  init, start = objective.get("init_from"), objective.get("init")
  if init == "scratch":
    text += "; started from random weights"
  elif init == "feature":
    how = _feature_text(start) if start else "not recorded"
    text += f"; started from the AT student ({how})"
  else:
    text += f"; started from the {init} baseline"
  return text + f"; best checkpoint by {_best_text(objective)}"


def objective_text(objective: Mapping[str, Any] | None) -> str:
  """One sentence: what trained a row (a stage's recorded objective, `train.describe_objective`)."""
  if not objective:
    return "not recorded"
  if "imitation" in objective:
    text = _kd_text(objective)
  elif "feature_loss" in objective:
    text = _feature_text(objective)
  else:
    text = f"{_loss_name(objective.get('loss'))}(x, y); best checkpoint by {_best_text(objective)}"
  if objective.get("from_config"):
    text += " (from the config: the checkpoint predates the record)"
  return text + "."


def objectives_section(objectives: Mapping[str, Mapping[str, Any] | None]) -> str:
  """Markdown list: each trained row's objective (`objective_text`), in row order."""
  lines = ["Training objectives:", ""]
  lines += [f"- {name}: {objective_text(objective)}" for name, objective in objectives.items()]
  return "\n".join(lines) + "\n"


def machine_info() -> str:
  """One line: OS, CPU architecture and count, Python, jax version and its devices."""
  import jax  # imported here so that the table and figure need no JAX

  devices = jax.devices()
  kinds = sorted({f"{d.platform}:{d.device_kind}" for d in devices})
  return (
    f"{platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs, "
    f"Python {platform.python_version()}, jax {jax.__version__}, "
    f"{len(devices)} device(s) {', '.join(kinds)}"
  )


def write_report(
  path: str | os.PathLike, table: str, meta: Mapping[str, Any] | None = None
) -> pathlib.Path:
  """Writes report.md (title, dataset/acceleration, command, machine, date, table) atomically.

  `path` is the report file, or a folder to hold `report.md`. `meta` may give 'title', 'dataset',
  'acc', 'command', 'machine' (default `machine_info()`), 'date' (default now, UTC), 'notes' (text
  after the table), 'objectives' (markdown after the table, `objectives_section`) and 'figure' (a
  PNG path, linked relative to the report).
  """
  meta = dict(meta or {})
  path = pathlib.Path(path)
  if path.is_dir() or not path.suffix:
    path = path / "report.md"
  path.parent.mkdir(parents=True, exist_ok=True)
  date = meta.get("date") or datetime.datetime.now(datetime.timezone.utc).strftime(
    "%Y-%m-%d %H:%M UTC"
  )
  lines = [f"# {meta.get('title', 'KD-MRI results')}", ""]
  if meta.get("dataset") is not None or meta.get("acc") is not None:
    lines.append(f"- Dataset: {meta.get('dataset', '?')}, acceleration {meta.get('acc', '?')}")
  if meta.get("command"):
    lines.append(f"- Command: `{meta['command']}`")
  lines.append(f"- Machine: {meta.get('machine') or machine_info()}")
  lines.append(f"- Date: {date}")
  lines += [
    "",
    table.rstrip("\n"),
    "",
    "Mean ± sample standard deviation over the validation volumes; per-volume metrics as the "
    "reference evaluate.py defines them (kdmri_jax.metrics).",
    "",
  ]
  if meta.get("objectives"):
    lines += [str(meta["objectives"]).rstrip("\n"), ""]
  if meta.get("figure"):
    figure = pathlib.Path(meta["figure"])
    rel = (
      os.path.relpath(figure, path.parent) if figure.is_absolute() or figure.exists() else figure
    )
    lines += [f"![qualitative comparison]({rel})", ""]
  if meta.get("notes"):
    lines += [str(meta["notes"]).rstrip("\n"), ""]
  write_text_atomic(path, "\n".join(lines))
  return path


def qualitative_figure(
  path: str | os.PathLike,
  images: Mapping[str, np.ndarray],
  target: np.ndarray,
  error_scale: float | None = None,
  target_position: int = 1,
  title: str | None = None,
  dpi: int = 72,
) -> pathlib.Path:
  """PNG like the paper's figure: images on top, |image − target| below on one shared colour scale.

  `images` maps names ('ZF', 'Teacher', 'Student', 'KD') to (H, W) slices in column order; the
  target is put in column `target_position` (1: after ZF) with no error map under it. Image panels
  share the grey scale [0, target.max()]; each title carries the slice's PSNR/SSIM (R =
  target.max()). Error maps share [0, error_scale] with one colour bar; the default scale is the
  99.5th percentile of all the error values, so that a few outlier pixels do not darken every map
  (larger errors saturate).
  """
  from matplotlib.figure import Figure  # Agg canvas without touching pyplot's global state

  target = np.asarray(target, dtype=np.float64)
  columns = _figure_columns(images, target, target_position)
  errors = {name: np.abs(im - target) for name, im in columns if im is not None}
  vmax_err = _error_scale(errors, error_scale)
  vmax = float(target.max()) if target.max() > 0 else 1.0

  n = len(columns)
  fig = Figure(figsize=(1.8 * n + 0.5, 3.9 if title is None else 4.2), layout="constrained")
  # A narrow last column holds the error colour bar so that every panel keeps the same size.
  grid = fig.add_gridspec(2, n + 1, width_ratios=[1.0] * n + [0.06])
  err_artist = None
  for j, (name, im) in enumerate(columns):
    top, bottom = fig.add_subplot(grid[0, j]), fig.add_subplot(grid[1, j])
    if im is None:
      _draw_target(top, bottom, target, vmax)
    else:
      err_artist = _draw_method(top, bottom, name, im, errors[name], target, vmax, vmax_err)
    for ax in (top, bottom):
      ax.set_xticks([])
      ax.set_yticks([])
    if j == 0:
      bottom.set_ylabel("|error|", fontsize=9)
  if err_artist is not None:
    bar = fig.colorbar(err_artist, cax=fig.add_subplot(grid[1, n]))
    bar.ax.tick_params(labelsize=7)
  if title:
    fig.suptitle(title, fontsize=10)
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  write_atomic(
    path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, pil_kwargs={"optimize": True})
  )
  return path


def _figure_columns(
  images: Mapping[str, np.ndarray], target: np.ndarray, target_position: int
) -> list[tuple[str, np.ndarray | None]]:
  """(name, image) per column, with ('Target', None) at `target_position`; shapes checked."""
  columns: list[tuple[str, np.ndarray | None]] = []
  for name, im in images.items():
    im = np.asarray(im, dtype=np.float64)
    if im.shape != target.shape:
      raise ValueError(f"image {name!r} has shape {im.shape}, target {target.shape}")
    columns.append((name, im))
  columns.insert(min(max(target_position, 0), len(columns)), ("Target", None))
  return columns


def _error_scale(errors: Mapping[str, np.ndarray], error_scale: float | None) -> float:
  """The top of the error maps' colour scale: `error_scale`, else the 99.5th percentile of all the
  errors (a few outlier pixels would otherwise darken every map; larger errors saturate)."""
  if error_scale:
    scale = float(error_scale)
  elif errors:
    scale = float(np.percentile(np.concatenate([e.ravel() for e in errors.values()]), 99.5))
  else:
    scale = 1.0
  return scale if scale > 0 else 1.0


def _draw_target(top: Any, bottom: Any, target: np.ndarray, vmax: float) -> None:
  top.imshow(target, cmap="gray", vmin=0.0, vmax=vmax, interpolation="nearest")
  top.set_title("Target", fontsize=9)
  bottom.axis("off")


def _draw_method(
  top: Any,
  bottom: Any,
  name: str,
  image: np.ndarray,
  error: np.ndarray,
  target: np.ndarray,
  vmax: float,
  vmax_err: float,
) -> Any:
  """The image with its PSNR/SSIM above its error map; returns the error map's artist."""
  top.imshow(image, cmap="gray", vmin=0.0, vmax=vmax, interpolation="nearest")
  p = metrics.psnr(target, image, data_range=vmax)
  s = metrics.ssim(target, image, data_range=vmax)
  top.set_title(f"{name}\n{p:.2f} dB / {s:.4f}", fontsize=9)
  return bottom.imshow(error, cmap="inferno", vmin=0.0, vmax=vmax_err, interpolation="nearest")
