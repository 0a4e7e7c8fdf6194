"""Degraded copies of a batch of CLIP-normalised images, for vision-aware uncertainty scores.

Every degradation acts on the (B, 3, H, W) pixel tensor AFTER the CLIP processor, i.e. in
the normalised space where 0 is the CLIP mean colour. The settings are fixed constants (no
flag changes them), so a variant's name identifies it completely:

- `mean`:  all zeros = the CLIP mean-colour image: no visual content at all;
- `blur`:  a strong Gaussian blur, sigma = side / BLUR_SIGMA_DIVISOR pixels (14 px at 336,
           one ViT patch), reflect padding: shapes survive as blobs, details and small
           objects do not;
- `noise`: the image plus Gaussian noise of std NOISE_STD (in CLIP std units) drawn from a
           generator seeded by (base seed, image name): the same image gets the same noise in
           any batch, order or process.

Stage 1 (`--image-variants mean,blur,noise`) runs the exact first-token distribution of every
question on each degraded copy and stores its yes/no summary (`first_token_summary`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llava.utils import hash_seed

IMAGE_VARIANTS = ("mean", "blur", "noise")
BLUR_SIGMA_DIVISOR = 24  # sigma = side / 24 pixels: 14 px for a 336 px image
NOISE_STD = 0.5  # in CLIP-normalised units (about 35 grey levels of 255)


def parse_image_variants(text: str | None) -> tuple[str, ...]:
    """The variants of a comma list, in the order given, without repeats; '' or None = none.

    >>> parse_image_variants("mean, blur,mean")
    ('mean', 'blur')
    >>> parse_image_variants("")
    ()
    >>> parse_image_variants("sepia")
    Traceback (most recent call last):
    ...
    ValueError: unknown image variant(s) ['sepia']; known: mean, blur, noise
    """
    if not text:
        return ()
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in IMAGE_VARIANTS]
    if unknown:
        raise ValueError(f"unknown image variant(s) {unknown}; known: {', '.join(IMAGE_VARIANTS)}")
    return tuple(dict.fromkeys(names))


def mean_colour_images(pixel_values: torch.Tensor) -> torch.Tensor:
    """All zeros: in CLIP-normalised space, the CLIP mean colour everywhere.

    >>> mean_colour_images(torch.ones(1, 3, 2, 2)).abs().sum().item()
    0.0
    """
    return torch.zeros_like(pixel_values)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """(2r + 1,) normalised Gaussian weights, r = ceil(3 sigma).

    >>> k = gaussian_kernel(1.0)
    >>> len(k), round(k.sum().item(), 6), bool(k[3] == k.max())
    (7, 1.0, True)
    """
    radius = max(1, int(torch.tensor(3.0 * sigma).ceil().item()))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (weights / weights.sum()).float()


def gaussian_blur(pixel_values: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W) images with reflect padding, same dtype.

    A constant image is unchanged; the blur keeps each channel's mean roughly.

    >>> flat = torch.full((1, 3, 8, 8), 0.7)
    >>> torch.allclose(gaussian_blur(flat, 1.5), flat)
    True
    """
    kernel = gaussian_kernel(sigma).to(pixel_values.device)  # (K,)
    channels, radius = pixel_values.shape[1], (len(kernel) - 1) // 2
    x = pixel_values.float()
    horizontal = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)  # (C, 1, 1, K)
    vertical = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)  # (C, 1, K, 1)
    x = torch.nn.functional.pad(x, (radius, radius, 0, 0), mode="reflect")
    x = torch.nn.functional.conv2d(x, horizontal, groups=channels)
    x = torch.nn.functional.pad(x, (0, 0, radius, radius), mode="reflect")
    x = torch.nn.functional.conv2d(x, vertical, groups=channels)
    return x.to(pixel_values.dtype)


def blurred_images(pixel_values: torch.Tensor) -> torch.Tensor:
    """The `blur` variant: sigma = side / BLUR_SIGMA_DIVISOR (14 px at 336 px)."""
    return gaussian_blur(pixel_values, pixel_values.shape[-1] / BLUR_SIGMA_DIVISOR)


def image_noise_seed(base_seed: int, image_name: str) -> int:
    """Seed of an image's noise: from the base seed and the image name only (batch-invariant).

    >>> image_noise_seed(0, "a.png") == image_noise_seed(0, "a.png") != image_noise_seed(1, "a.png")
    True
    """
    return hash_seed(base_seed, f"image-noise:{image_name}")


def noisy_images(pixel_values: torch.Tensor, image_names: Sequence[str], base_seed: int,
                 std: float = NOISE_STD) -> torch.Tensor:
    """The `noise` variant: each image plus N(0, std^2) noise from its own seeded CPU generator."""
    if len(image_names) != pixel_values.shape[0]:
        raise ValueError(f"{len(image_names)} image names for {pixel_values.shape[0]} images")
    shape = tuple(pixel_values.shape[1:])  # (C, H, W)
    noise = torch.stack([
        torch.randn(shape, generator=torch.Generator().manual_seed(image_noise_seed(base_seed, name)))
        for name in image_names
    ])  # (B, C, H, W) float32 on CPU
    return (pixel_values.float() + std * noise.to(pixel_values.device)).to(pixel_values.dtype)


def degrade_images(variant: str, pixel_values: torch.Tensor, image_names: Sequence[str],
                   base_seed: int) -> torch.Tensor:
    """The `variant` copy of a (B, 3, H, W) batch whose rows show `image_names`."""
    if variant == "mean":
        return mean_colour_images(pixel_values)
    if variant == "blur":
        return blurred_images(pixel_values)
    if variant == "noise":
        return noisy_images(pixel_values, image_names, base_seed)
    raise ValueError(f"unknown image variant {variant!r}; known: {', '.join(IMAGE_VARIANTS)}")


def variant_settings(variants: Sequence[str]) -> dict:
    """The fixed settings of the variants, for the run's manifest.

    >>> variant_settings(["blur"])
    {'blur': {'sigma': 'side / 24'}}
    """
    every = {"mean": {"pixels": "zeros in CLIP-normalised space"},
             "blur": {"sigma": f"side / {BLUR_SIGMA_DIVISOR}"},
             "noise": {"std": NOISE_STD, "seed": "hash_seed(base seed, 'image-noise:' + image name)"}}
    return {variant: every[variant] for variant in variants}


def first_token_summary(first_token_probs: torch.Tensor, yes_ids: Sequence[int], no_ids: Sequence[int]) -> dict:
    """yes/no mass and top token of a (V,) first-token distribution (what the records store).

    >>> first_token_summary(torch.tensor([0.1, 0.6, 0.3]), [1], [2])
    {'yes_mass': 0.6000000238418579, 'no_mass': 0.30000001192092896, 'top_token_id': 1, 'top_prob': 0.6000000238418579}
    """
    probs = first_token_probs
    return {
        "yes_mass": float(probs[list(yes_ids)].sum()),
        "no_mass": float(probs[list(no_ids)].sum()),
        "top_token_id": int(probs.argmax()),
        "top_prob": float(probs.max()),
    }
