"""Batch-level augmentation and normalisation in plain torch.

Datasets return un-normalised images in [0, 1]; the training loop augments whole batches here,
on whatever device the batch lives on, with an explicit ``torch.Generator`` so a run can be
replayed exactly.
"""
import numpy as np
import torch
import torch.nn.functional as F

# Per-channel statistics of the training sets, images in [0, 1] (as in RepDistiller / torchvision).


def image_to_tensor(image):
    """uint8 (H, W, 3) numpy image -> float tensor (3, H, W) in [0, 1], the datasets' format."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)


def random_crop_flip(images, padding=4, generator=None, flip_prob=0.5):
    """Random crop after zero padding, then random horizontal flip, per sample.

    The standard CIFAR augmentation, vectorised: one gather builds the whole batch.

    Args:
        images: (B, C, H, W) tensor.
        padding: zero padding on each side before cropping back to (H, W).
        generator: ``torch.Generator`` driving the random offsets and flips (reproducible);
            the global RNG when None.  Its device is used for the draws.
        flip_prob: probability of flipping each sample (0 never flips, 1 always flips).

    Returns:
        Tensor of the same shape, dtype and device as ``images``.
    """
    if images.dim() != 4:
        raise ValueError(f'random_crop_flip expects (B, C, H, W) images, got shape '
                         f'{tuple(images.shape)}')
    batch_size, _, height, width = images.shape
    draw_device = generator.device if generator is not None else images.device
    offsets = torch.randint(0, 2 * padding + 1, (2, batch_size), generator=generator,
                            device=draw_device).to(images.device)
    flips = (torch.rand(batch_size, generator=generator, device=draw_device)
             < flip_prob).to(images.device)

    padded = F.pad(images, (padding, padding, padding, padding))
    rows = offsets[0, :, None] + torch.arange(height, device=images.device)  # (B, H)
    cols = torch.arange(width, device=images.device).expand(batch_size, width)
    # A flip reads the columns right to left: fold it into the gather indices.
    cols = torch.where(flips[:, None], cols.flip(1), cols) + offsets[1, :, None]  # (B, W)
    batch_index = torch.arange(batch_size, device=images.device)[:, None, None]
    # Advanced indexing with the channel slice in the middle puts channels last: (B, H, W, C).
    cropped = padded[batch_index, :, rows[:, :, None], cols[:, None, :]]
    return cropped.permute(0, 3, 1, 2).contiguous()


def normalize(images, mean, std):
    """(images - mean) / std per channel; ``mean`` and ``std`` are sequences of C floats."""
    mean = torch.as_tensor(mean, dtype=images.dtype, device=images.device)
    std = torch.as_tensor(std, dtype=images.dtype, device=images.device)
    return (images - mean[:, None, None]) / std[:, None, None]
