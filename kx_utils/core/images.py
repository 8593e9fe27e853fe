"""Image batches as the models see them: uint8 N x 3 x H x W tensors, resized one way, scaled to [0, 1],
normalised with ImageNet's statistics."""

from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def square_resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """A uint8 batch (N x 3 x H x W, square) resized to ``size`` x ``size``: bilinear, antialiased, rounded.

    The one resize of the package: decoding (:func:`kx_utils.data.imagefolder.decode_image`) and in-memory resizes
    (:func:`resize_images`) both use it, so an image decoded at a size has the same
    pixels as the same image decoded at its own size and resized afterwards.
    """
    if image.shape[-1] == size and image.shape[-2] == size:
        return image
    x = torch.nn.functional.interpolate(image.float(), size=(size, size), mode="bilinear", antialias=True,
                                        align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8)


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 batch to ``size`` x ``size`` (:func:`square_resize`), in chunks."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return torch.cat([square_resize(chunk, size) for chunk in images.split(1024)])


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [0, 1]; float input is returned unchanged."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images
