"""models.layout: its conv stacks are the models' parameter trees, in the models' call order."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from kdmri_jax import models
from kdmri_jax.models import layout

CASES = [
  ("teacher", {}),
  ("student", {}),
  ("vdsr_teacher", {}),
  ("vdsr_student", {}),
  ("student", {"num_cascades": 2, "complex_images": True}),
  ("student", {"num_convs": 2}),
  ("student", {"num_cascades": 1, "learn_lambda": True}),
  ("teacher", {"num_cascades": 4, "first_cascade": 2}),
]


def _convs(model):
  return [conv for stack in layout.conv_stacks(model) for conv in stack]


def _kernels(params):
  """{module path: kernel shape} of every conv in a parameter tree."""
  return {
    tuple(k.key for k in path[:-1]): leaf.shape
    for path, leaf in jax.tree_util.tree_leaves_with_path(params)
    if path[-1].key == "kernel"
  }


@pytest.mark.parametrize("name, overrides", CASES)
def test_layout_names_every_conv_of_the_parameter_tree(name, overrides):
  model = models.build_model(name, **overrides)
  params = jax.eval_shape(lambda: models.init_params(model, jax.random.PRNGKey(0), 8, 8))
  convs = _convs(model)
  assert {conv.path: conv.kernel_shape for conv in convs} == _kernels(params)
  assert len({conv.path for conv in convs}) == len(convs)
  for conv in convs:
    assert layout.conv_params(params, conv)["bias"].shape == (conv.out_features,)
  lam = 1 if overrides.get("learn_lambda") else 0  # dc_{c}'s learnable λ, one per cascade
  conv_sizes = sum(np.prod(conv.kernel_shape) + conv.out_features for conv in convs)
  assert conv_sizes + lam == sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(params))


@pytest.mark.parametrize("name, overrides", CASES[:2] + CASES[3:5] + CASES[7:])
def test_conv_stacks_are_in_the_models_call_order(name, overrides):
  model = models.build_model(name, **overrides)
  params = models.init_params(model, jax.random.PRNGKey(0), 8, 8)
  called = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.Conv) and context.method_name == "__call__":
      called.append(tuple(context.module.scope.path))
    return next_fun(*args, **kwargs)

  complex_images = getattr(model, "complex_images", False)
  image = np.zeros((1, 8, 8), np.complex64 if complex_images else np.float32)
  batch = {"input": image, "kspace": np.zeros((1, 8, 8), np.complex64), "mask": np.ones((8, 8))}
  with nn.intercept_methods(record):
    models.apply(model, params, batch)
  assert called == [conv.path for conv in _convs(model)]


def test_relu_after_all_but_each_stacks_last_conv_and_the_authors_names():
  stacks = layout.conv_stacks(models.build_model("student"))
  assert [[conv.relu for conv in stack] for stack in stacks] == [[True, True, False]] * 5
  assert [(c.in_features, c.out_features) for c in stacks[0]] == [(1, 32), (32, 32), (32, 1)]
  conv = stacks[1][2]
  assert conv.path == ("cascade_1", "conv_2") and conv.torch_prefix == "cascade2.conv3"
  last = layout.conv_stacks(models.build_model("vdsr_student"))[0][-1]
  assert last.path == ("conv_6",) and last.torch_prefix == "conv7" and not last.relu


def test_a_later_cascades_model_keeps_the_absolute_cascade_numbers():
  stacks = layout.conv_stacks(models.build_model("student", first_cascade=3))
  assert [stack[0].path for stack in stacks] == [("cascade_3", "conv_0"), ("cascade_4", "conv_0")]
  assert stacks[1][2].torch_prefix == "cascade5.conv3"
