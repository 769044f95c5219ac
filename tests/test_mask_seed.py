"""experiments/mask_seed.py: the zero-filled PSNR and the seed rule behind
masks.DEFAULT_MASK_SEED."""

import numpy as np

from experiments import mask_seed
from kdmri_jax import masks


def test_zero_filled_psnr_matches_a_direct_computation():
  rng = np.random.default_rng(0)
  target = rng.random((2, 16, 16)).astype(np.float32)
  mask = masks.cartesian_mask((16, 16), "4x", seed=1)
  zero_filled = np.abs(np.fft.ifft2(np.fft.fft2(target, norm="ortho") * mask, norm="ortho"))
  mse = np.mean((target - zero_filled) ** 2)
  expected = 10 * np.log10(target.max() ** 2 / mse)
  assert abs(mask_seed.zero_filled_psnr([target], mask) - expected) < 1e-3
  assert mask_seed.zero_filled_psnr([target], np.ones((16, 16), np.float32)) > 100


def test_the_default_seed_qualifies_and_seed_zero_does_not():
  assert mask_seed.qualifies(masks.DEFAULT_MASK_SEED)
  assert not mask_seed.qualifies(0)  # 8x mean |ky| 26.3 against the authors' 20.5


def test_cli_prints_the_default_seed_row(tmp_path, capsys):
  assert mask_seed.main(["--cache-dir", str(tmp_path), "--slice-step", "8"]) == 0
  out = capsys.readouterr().out
  assert (
    f"seed {masks.DEFAULT_MASK_SEED}: zero-filled PSNR" in out and "authors' masks: 25.39" in out
  )
