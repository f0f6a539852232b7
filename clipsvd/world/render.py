"""Draw scenes as images, in a clean style for pretraining and shifted styles for adaptation.

Every shape is a margin function m(p, q) in the object's own unit coordinates (positive inside,
about the distance to the edge), so one vectorised pass over all objects of a batch draws
anti-aliased shapes, outlines and stripes without a drawing library. Styles change how the same
objects look — the factors, and so the labels and captions, stay the same:

- ``clean``: flat colours on a light, near-neutral background (pretraining);
- ``microscopy``: cell-like objects on a stained background — wobbly membranes, darker rims, a
  nucleus, colours pulled towards the stain, blur and sensor noise (the shift CLIP-SVD is for);
- ``sketch``: hand-drawn outlines and hatching on paper.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from clipsvd.world.scenes import SceneBatch

STYLES = ("clean", "microscopy", "sketch")
DEFAULT_IMAGE_SIZE = 64
_SQRT2 = math.sqrt(2.0)


def _circle(p, q, cx=0.0, cy=0.0, r=1.0):
    return r - torch.sqrt((p - cx) ** 2 + (q - cy) ** 2 + 1e-12)


def _square(p, q):
    return 0.8 - torch.maximum(p.abs(), q.abs())


def _diamond(p, q):
    return (1.05 - p.abs() - q.abs()) / _SQRT2


def _triangle(p, q):  # pointing up (q grows downwards in image coordinates)
    up = -q
    edges = torch.stack([-up, 0.866 * p + 0.5 * up, -0.866 * p + 0.5 * up])
    return 0.55 - edges.amax(0)


def _star(p, q):
    rho = torch.sqrt(p * p + q * q + 1e-12)
    sector = 2 * math.pi / 5
    phi = torch.atan2(p, -q) % sector
    t = (phi - sector / 2).abs() / (sector / 2)  # 1 at a point, 0 between points
    return 0.6 * (0.45 + 0.7 * t - rho)


def _cross(p, q):
    a, b = p.abs(), q.abs()
    return torch.maximum(torch.minimum(0.95 - a, 0.32 - b), torch.minimum(0.32 - a, 0.95 - b))


def _heart(p, q):
    up = -q
    lobes = torch.maximum(_circle(p, up, -0.42, 0.3, 0.5), _circle(p, up, 0.42, 0.3, 0.5))
    tip = torch.minimum(torch.minimum(0.578 - (0.794 * p - 0.608 * up), 0.578 - (-0.794 * p - 0.608 * up)),
                        0.3 - up)
    return torch.maximum(lobes, tip)


def _crescent(p, q):
    return torch.minimum(_circle(p, q), -_circle(p, q, 0.45, -0.15, 0.82))


SHAPE_MARGINS = (_circle, _square, _triangle, _diamond, _star, _cross, _heart, _crescent)  # order of SHAPES


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur as weighted sums of shifted views (much faster on CPU than a depthwise conv)."""
    radius = max(1, math.ceil(2.5 * sigma))
    taps = [math.exp(-i * i / (2 * sigma * sigma)) for i in range(-radius, radius + 1)]
    taps = [t / sum(taps) for t in taps]
    h, w = images.shape[-2:]
    x = F.pad(images, (radius, radius, 0, 0), mode="replicate")
    images = sum(t * x[..., :, i:i + w] for i, t in enumerate(taps))
    x = F.pad(images, (0, 0, radius, radius), mode="replicate")
    return sum(t * x[..., i:i + h, :] for i, t in enumerate(taps))


def _low_frequency_noise(b: int, channels: int, size: int, g: torch.Generator, cells: int = 6) -> torch.Tensor:
    coarse = torch.randn(b, channels, cells, cells, generator=g)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)


def render(scenes: SceneBatch, style: str = "clean", size: int = DEFAULT_IMAGE_SIZE, seed: int = 0,
           return_masks: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Images (B, 3, size, size) as floats in 0..1. Deterministic given scenes, style, size and seed.

    return_masks: also the objects' masks (B, size, size) bool — pixels at least half inside an object's edge,
    the same (style-wobbled) edge the image is drawn from; the images are the same either way.
    """
    if style not in STYLES:
        raise ValueError(f"style {style!r} is unknown; expected one of {', '.join(STYLES)}")
    g = torch.Generator().manual_seed(seed)
    b = len(scenes)
    present = torch.from_numpy(scenes.present)
    bi, oi = present.nonzero(as_tuple=True)  # draw only real objects: (N,) indices
    radius_px = torch.from_numpy(scenes.radius)[bi, oi] * size
    centre = torch.from_numpy(scenes.centre)[bi, oi] * size
    rot = torch.from_numpy(scenes.rotation)[bi, oi]
    shape = torch.from_numpy(scenes.shape)[bi, oi]
    fill = torch.from_numpy(scenes.fill)[bi, oi]
    rgb = torch.from_numpy(scenes.rgb)[bi, oi]
    n = len(bi)

    coords = torch.arange(size, dtype=torch.float32) + 0.5
    dx = coords.view(1, 1, 1, -1) - centre[:, 0].view(-1, 1, 1, 1)
    dy = coords.view(1, 1, -1, 1) - centre[:, 1].view(-1, 1, 1, 1)
    cos, sin = rot.cos().view(-1, 1, 1, 1), rot.sin().view(-1, 1, 1, 1)
    r = radius_px.view(-1, 1, 1, 1)
    p, q = (cos * dx + sin * dy) / r, (-sin * dx + cos * dy) / r
    margin = torch.empty(n, 1, size, size)  # every per-object map is (N, 1, H, W)
    for k, fn in enumerate(SHAPE_MARGINS):
        sel = (shape == k).nonzero(as_tuple=True)[0]
        if len(sel):
            margin[sel] = fn(p[sel], q[sel])
    if style in ("microscopy", "sketch"):  # organic, hand-made edges
        phi = torch.atan2(q, p)
        amp = 0.07 if style == "microscopy" else 0.035
        phase = torch.rand(n, 2, 1, 1, generator=g) * 2 * math.pi
        margin = margin + amp * (torch.sin(3 * phi + phase[:, :1]) + 0.6 * torch.sin(5 * phi + phase[:, 1:]))
    dist = margin * r  # pixels inside the edge (negative outside)
    inside = (dist + 0.5).clamp(0, 1)
    if return_masks:
        masks = torch.zeros(b, size, size, dtype=torch.bool)
        masks.index_put_((bi,), inside[:, 0] >= 0.5, accumulate=True)
    stroke = max(1.2, 0.06 * size / 4)
    band = inside * (stroke - dist + 0.5).clamp(0, 1)  # the outline
    stripes = ((torch.sin(2 * math.pi * (p + q) / 0.55) * 2.5) + 0.5).clamp(0, 1)
    is_solid = (fill == 0).view(-1, 1, 1, 1).float()
    is_outline = (fill == 1).view(-1, 1, 1, 1).float()
    is_striped = (fill == 2).view(-1, 1, 1, 1).float()

    if style == "clean":
        background = 0.88 + 0.08 * torch.rand(b, 1, 1, 1, generator=g) + 0.03 * (torch.rand(b, 3, 1, 1, generator=g) - 0.5)
        alpha = is_solid * inside + is_outline * band + is_striped * torch.maximum(inside * stripes, band)
        colour = rgb.view(n, 3, 1, 1).expand(n, 3, size, size)
    elif style == "microscopy":
        stain = torch.tensor([[0.93, 0.80, 0.88], [0.86, 0.83, 0.95], [0.95, 0.88, 0.84]])
        choice = torch.randint(0, len(stain), (b,), generator=g)
        background = stain[choice].view(b, 3, 1, 1) + 0.05 * _low_frequency_noise(b, 1, size, g)
        tint = torch.tensor([0.45, 0.22, 0.50]).view(1, 3, 1, 1)
        cytoplasm = 0.6 * rgb.view(n, 3, 1, 1) + 0.4 * tint
        speckle = 1 - 0.22 * torch.rand(n, 1, size, size, generator=g)
        membrane = 1 - 0.45 * band  # darker rim
        nucleus_offset = (torch.rand(n, 2, 1, 1, generator=g) - 0.5) * 0.5
        nucleus = ((_circle(p, q, nucleus_offset[:, :1], nucleus_offset[:, 1:], 0.3) * r) + 0.5).clamp(0, 1)
        nucleus = nucleus * (1 - is_outline)
        colour = cytoplasm * speckle * membrane
        colour = colour * (1 - 0.7 * nucleus) + 0.7 * nucleus * torch.tensor([0.30, 0.14, 0.42]).view(1, 3, 1, 1)
        alpha = 0.9 * (is_solid * inside + is_outline * torch.maximum(band, 0.25 * inside)
                       + is_striped * torch.maximum(inside * (0.45 + 0.55 * stripes), band))
    else:  # sketch
        background = torch.tensor([0.97, 0.95, 0.89]).view(1, 3, 1, 1) + 0.03 * (torch.rand(b, 1, size, size, generator=g) - 0.5)
        hatch = ((torch.sin(2 * math.pi * (p - q) / 0.35) * 3) + 0.5).clamp(0, 1)
        interior = is_solid * 0.55 * inside * hatch + is_striped * 0.75 * inside * stripes
        alpha = torch.maximum(band, interior)
        colour = (0.85 * rgb).view(n, 3, 1, 1).expand(n, 3, size, size)

    images = background.expand(b, 3, size, size).clone()
    for slot in range(scenes.present.shape[1]):  # later objects are drawn over earlier ones
        sel = (oi == slot).nonzero(as_tuple=True)[0]
        if len(sel):
            a = alpha[sel]
            images[bi[sel]] = images[bi[sel]] * (1 - a) + colour[sel] * a
    if style == "microscopy":
        images = _blur(images, 1.0)
        images = images + 0.045 * torch.randn(images.shape, generator=g)
        yy, xx = torch.meshgrid(coords / size - 0.5, coords / size - 0.5, indexing="ij")
        images = images * (1 - 0.35 * (xx * xx + yy * yy))  # vignette of the microscope's field
    elif style == "sketch":
        images = _blur(images, 0.5)
    images = images.clamp(0, 1)
    return (images, masks) if return_masks else images


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) floats -> (B, H, W, 3) uint8, the layout of the array-backed dataset splits."""
    return (images.permute(0, 2, 3, 1) * 255 + 0.5).clamp(0, 255).to(torch.uint8).numpy()
