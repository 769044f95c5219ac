"""Project files: `.ci/run` runs exactly the README's test command, the README's main command names
real files, and torch is an optional extra pinned like the converter's install hint."""

import os
import re
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme_commands() -> list[str]:
  text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
  section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
  return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_ci_runs_the_readme_test_command_verbatim():
  main_command, test_command = _readme_commands()
  assert "pytest" in test_command and "requirements-test.txt" in test_command
  # Lint and format are checked first, joined by `&&`, so a finding stops CI before the tests.
  steps = [step.strip() for step in test_command.split("&&")]
  assert steps[1:3] == ["ruff check", "ruff format --check"], test_command
  assert steps[-1] == "python -m pytest", test_command
  script = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read().splitlines()
  assert test_command in [line.strip() for line in script]
  assert os.access(os.path.join(ROOT, ".ci", "run"), os.X_OK)


def test_readme_main_command_names_existing_files():
  main_command, _ = _readme_commands()
  assert "python -m kdmri_jax.main --config configs/brain_8x.py" in main_command
  assert os.path.isfile(os.path.join(ROOT, "configs", "brain_8x.py"))
  assert os.path.isfile(os.path.join(ROOT, "kdmri_jax", "main.py"))
  assert "requirements.txt" in main_command


def test_torch_is_an_optional_extra_with_the_converters_pin():
  from kdmri_jax import convert

  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
    project = tomllib.load(handle)["project"]
  assert project["optional-dependencies"]["torch"] == [convert.TORCH_PIN]
  assert not any(line.startswith("torch") for line in open(os.path.join(ROOT, "requirements.txt")))
  assert convert.TORCH_PIN in open(os.path.join(ROOT, "requirements-test.txt")).read().splitlines()


def test_ruff_has_the_project_style_and_is_pinned():
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
    ruff = tomllib.load(handle)["tool"]["ruff"]
  assert (ruff["line-length"], ruff["indent-width"]) == (100, 2)
  assert {"E", "F", "W"} <= set(ruff["lint"]["select"])
  requirements = open(os.path.join(ROOT, "requirements-test.txt")).read().splitlines()
  assert [line for line in requirements if line.startswith("ruff")] == ["ruff==0.14.0"]
