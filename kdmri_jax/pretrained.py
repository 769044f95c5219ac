"""A teacher trained beforehand: `config.pretrained_teacher` names a finished teacher stage folder.

When the workdir has no `teacher/` folder yet, that folder is copied in (to a temporary name, then
renamed, so a crash leaves no half copy), and the pipeline's teacher stage then finds a finished
stage and skips, as it does for a teacher the workdir trained itself. A workdir's own `teacher/`
always wins. The demo (configs/demo.py) uses the one committed under experiments/pretrained/.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from kdmri_jax import checkpoints
from kdmri_jax.errors import require

FIELD = "config.pretrained_teacher"


def check_source(folder: str) -> str:
  """The absolute path of a finished teacher stage folder; one sentence if it is not one."""
  folder = os.path.abspath(folder)
  require(
    os.path.isdir(folder),
    f"{FIELD} = {folder!r} is not a folder; point it at a finished "
    "teacher stage folder (with `done` and `best/`) or leave it unset.",
  )
  has_best = checkpoints.has_step(os.path.join(folder, "best"))
  require(
    os.path.exists(os.path.join(folder, "done")) and has_best,
    f"{FIELD} = {folder!r} is not a finished teacher stage (it needs a `done` file and a "
    "checkpoint in `best/`); train one with --config.stages=teacher and point at its "
    "WORKDIR/teacher.",
  )
  return folder


def install(source: str | None, workdir: str) -> str | None:
  """Copies the pretrained teacher folder `source` into WORKDIR/teacher when that is absent.

  Returns what was done, for the log, or None when nothing was configured or needed."""
  if not source:
    return None
  target = os.path.join(workdir, "teacher")
  if os.path.lexists(target):
    return None
  source = check_source(source)
  tmp = tempfile.mkdtemp(dir=workdir, prefix=".teacher.", suffix=".tmp")
  try:
    shutil.copytree(
      source, os.path.join(tmp, "teacher"), ignore=shutil.ignore_patterns("checkpoints")
    )
    os.replace(os.path.join(tmp, "teacher"), target)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return f"teacher: copied the pretrained teacher from {source} ({FIELD}); its stage is finished."
