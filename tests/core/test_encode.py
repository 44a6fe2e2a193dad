"""The core's numpy encoding reproduces PyTorch's bilinear resize (the reference a VLM's
preprocessing is written against)."""

import numpy as np
import pytest
import torch

from mobile_peft.core.encode import bilinear_resize, encode_image
from mobile_peft.core.spec import InputSpec


@pytest.mark.parametrize("shape,size", [((8, 8), 32), ((8, 8), 5), ((13, 7), 16), ((40, 40), 32)])
def test_bilinear_resize_matches_torch(shape, size):
    x = np.random.default_rng(0).random((3, *shape), dtype=np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x)[None], size=(size, size), mode="bilinear", align_corners=False, antialias=False)[0]
    np.testing.assert_allclose(bilinear_resize(x, size), ref.numpy(), atol=1e-6)


def test_encode_image_matches_a_torch_reference():
    spec = InputSpec(image_size=12, image_mean=(0.1, 0.2, 0.3), image_std=(0.5, 0.6, 0.7))
    rgb = (np.random.default_rng(1).random((20, 24, 3)) * 255).astype(np.uint8)
    x = torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1)[None]
    x = torch.nn.functional.interpolate(x, size=(12, 12), mode="bilinear", align_corners=False, antialias=False)[0]
    ref = (x - torch.tensor(spec.image_mean).view(3, 1, 1)) / torch.tensor(spec.image_std).view(3, 1, 1)
    np.testing.assert_allclose(encode_image(rgb, spec), ref.numpy(), atol=1e-6)
