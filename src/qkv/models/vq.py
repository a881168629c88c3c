"""A VQ-VAE image tokenizer (van den Oord et al. 2017, "Neural Discrete Representation
Learning"): images in, a grid of discrete codes out, and back.

A conv encoder maps a ``(c, H, W)`` image to a ``(d_code, H / f, W / f)`` grid (``f =
2 ** n_down``); each grid vector is replaced by its nearest codebook entry (squared
Euclidean distance); a conv decoder maps the quantized grid back to pixels. The code indices,
read row by row, are the image's tokens: DALL-E's first stage (Ramesh et al. 2021, there a
dVAE) on a small scale.

Training minimises (eq. 3 of the paper) ::

    L = ||x - D(z_q)||^2 + ||sg[z_e] - e||^2 + beta * ||z_e - sg[e]||^2

with the straight-through estimator: the decoder's gradient with respect to ``z_q`` is
copied to ``z_e`` (``z_q = z_e + sg[e - z_e]``). The codebook is learned by its own loss
term (the paper's main variant, not the EMA one) and initialised from encoder outputs of the
first training batch (:meth:`VectorQuantizer.init_from`), which keeps codes from starting dead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qkv._checks import MAX_SIZE, check_int, check_range


@dataclass
class VQConfig:
    """Shape of a :class:`VQVAE`.

    Attributes:
        image_size: side of the square input images in pixels.
        in_channels: image channels (1 for grey).
        hidden: channels of the conv layers.
        d_code: width of a code vector.
        n_codes: codebook size (the image-token vocabulary).
        n_down: stride-2 convolutions; a code covers ``2 ** n_down`` pixels per side.
        beta: weight of the commitment loss.
    """

    image_size: int = 28
    in_channels: int = 1
    hidden: int = 64
    d_code: int = 32
    n_codes: int = 128
    n_down: int = 2
    beta: float = 0.25

    def __post_init__(self) -> None:
        for name in ("image_size", "in_channels", "hidden", "d_code"):
            check_int(name, getattr(self, name), 1, maximum=MAX_SIZE)
        check_int("n_codes", self.n_codes, 2, maximum=MAX_SIZE)
        # 2 ** n_down must divide image_size: bounded by its bits before the power is taken
        check_int("n_down", self.n_down, 1, maximum=self.image_size.bit_length())
        if self.image_size % (2**self.n_down):
            raise ValueError(
                f"image_size ({self.image_size}) must be divisible by 2 ** n_down "
                f"({2**self.n_down})"
            )
        check_range("beta", self.beta, lo=0.0)

    @property
    def grid(self) -> int:
        """Codes per side of an image."""
        return self.image_size // 2**self.n_down

    @property
    def n_tokens(self) -> int:
        """Codes (tokens) per image."""
        return self.grid * self.grid

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VQConfig:
        """The config of a dict from :meth:`to_dict`.

        Raises:
            ValueError: not a dict, unknown fields (named) or invalid values.
        """
        if not isinstance(d, dict):
            raise ValueError(f"a VQConfig must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown VQConfig fields {unknown}; known: {sorted(known)}")
        return cls(**d)


class Quantized(NamedTuple):
    """What :class:`VectorQuantizer` returns.

    Attributes:
        z_q: ``(b, d, h, w)`` quantized vectors, with the straight-through gradient to ``z_e``.
        codes: ``(b, h, w)`` long code indices.
        codebook_loss: ``mean ||sg[z_e] - e||^2``.
        commitment_loss: ``mean ||z_e - sg[e]||^2`` (not yet weighted by beta).
    """

    z_q: Tensor
    codes: Tensor
    codebook_loss: Tensor
    commitment_loss: Tensor


class VectorQuantizer(nn.Module):
    """Nearest-neighbour quantization against a learned codebook.

    Args:
        n_codes: codebook entries.
        d_code: width of an entry.
    """

    def __init__(self, n_codes: int, d_code: int) -> None:
        super().__init__()
        self.codebook = nn.Parameter(
            torch.empty(n_codes, d_code).uniform_(-1 / n_codes, 1 / n_codes)
        )

    def nearest(self, z: Tensor) -> Tensor:
        """Index of the nearest codebook entry of each vector.

        Args:
            z: ``(n, d)``.

        Returns:
            ``(n,)`` long; ties go to the lowest index.
        """
        e = self.codebook
        # ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2; ||z||^2 is the same for every code
        dist = e.pow(2).sum(-1)[None] - 2 * z @ e.t()  # (n, n_codes)
        return dist.argmin(-1)

    @torch.no_grad()
    def init_from(self, z_e: Tensor, generator: torch.Generator | None = None) -> None:
        """Set the codebook to randomly chosen encoder outputs (with repeats when there are
        fewer vectors than codes), so every code starts where the data is.

        Args:
            z_e: ``(b, d, h, w)`` encoder outputs.
            generator: the random source of the choice.
        """
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, z_e.shape[1])  # (b h w, d)
        n = self.codebook.shape[0]
        pick = torch.randint(flat.shape[0], (n,), generator=generator, device=flat.device)
        if flat.shape[0] >= n:
            pick = torch.randperm(flat.shape[0], generator=generator, device=flat.device)[:n]
        self.codebook.copy_(flat[pick])

    def lookup(self, codes: Tensor) -> Tensor:
        """Code vectors of indices: ``(b, h, w)`` -> ``(b, d, h, w)``."""
        return self.codebook[codes].permute(0, 3, 1, 2)  # (b, d, h, w)

    def forward(self, z_e: Tensor) -> Quantized:
        """Quantize a grid of vectors.

        Args:
            z_e: ``(b, d, h, w)`` encoder outputs.
        """
        b, d, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)  # (b h w, d)
        codes = self.nearest(flat.detach()).view(b, h, w)  # (b, h, w)
        e = self.lookup(codes)  # (b, d, h, w)
        codebook_loss = F.mse_loss(e, z_e.detach())
        commitment_loss = F.mse_loss(z_e, e.detach())
        z_q = z_e + (e - z_e).detach()  # straight through: forward e, backward identity
        return Quantized(z_q, codes, codebook_loss, commitment_loss)


class ResBlock(nn.Module):
    """``x + conv1x1(relu(conv3x3(relu(x))))``, the VQ-VAE paper's residual block."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class VQOutput(NamedTuple):
    """What :meth:`VQVAE.forward` returns.

    Attributes:
        recon: ``(b, c, H, W)`` reconstruction in ``[0, 1]``.
        codes: ``(b, h, w)`` code indices.
        loss: the training loss (reconstruction MSE + codebook + beta * commitment).
        recon_loss: the reconstruction MSE alone.
    """

    recon: Tensor
    codes: Tensor
    loss: Tensor
    recon_loss: Tensor


class VQVAE(nn.Module):
    """Conv encoder, :class:`VectorQuantizer`, conv decoder.

    Args:
        config: a :class:`VQConfig`.
    """

    def __init__(self, config: VQConfig) -> None:
        super().__init__()
        self.config = c = config
        down: list[nn.Module] = []
        ch = c.in_channels
        for _ in range(c.n_down):
            down += [nn.Conv2d(ch, c.hidden, 4, stride=2, padding=1), nn.ReLU()]
            ch = c.hidden
        self.encoder = nn.Sequential(
            *down, ResBlock(c.hidden), nn.ReLU(), nn.Conv2d(c.hidden, c.d_code, 1)
        )
        self.quantizer = VectorQuantizer(c.n_codes, c.d_code)
        up: list[nn.Module] = [nn.Conv2d(c.d_code, c.hidden, 3, padding=1), ResBlock(c.hidden)]
        for i in range(c.n_down):
            out = c.in_channels if i == c.n_down - 1 else c.hidden
            up += [nn.ReLU(), nn.ConvTranspose2d(c.hidden, out, 4, stride=2, padding=1)]
        self.decoder = nn.Sequential(*up)

    def check_images(self, images: Tensor) -> None:
        """Raise ``ValueError`` unless ``images`` is ``(b, in_channels, image_size, image_size)``."""
        c = self.config
        want = (c.in_channels, c.image_size, c.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != want:
            raise ValueError(
                f"images must be (b, {', '.join(map(str, want))}), got {tuple(images.shape)}"
            )

    def forward(self, images: Tensor) -> VQOutput:
        """Encode, quantize and decode a batch, with the training loss.

        Args:
            images: ``(b, c, H, W)`` in ``[0, 1]``.
        """
        self.check_images(images)
        q = self.quantizer(self.encoder(images))  # z_q (b, d, h, w)
        recon = torch.sigmoid(self.decoder(q.z_q))  # (b, c, H, W)
        recon_loss = F.mse_loss(recon, images)
        loss = recon_loss + q.codebook_loss + self.config.beta * q.commitment_loss
        return VQOutput(recon, q.codes, loss, recon_loss)

    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Image tokens: ``(b, c, H, W)`` -> ``(b, h * w)`` code indices, row by row."""
        self.check_images(images)
        codes = self.quantizer(self.encoder(images)).codes  # (b, h, w)
        return codes.flatten(1)  # (b, h w)

    @torch.no_grad()
    def decode(self, tokens: Tensor) -> Tensor:
        """Images of tokens: ``(b, h * w)`` code indices -> ``(b, c, H, W)`` in ``[0, 1]``.

        Raises:
            ValueError: a token count other than ``config.n_tokens`` or a code out of range.
        """
        c = self.config
        if tokens.ndim != 2 or tokens.shape[1] != c.n_tokens:
            raise ValueError(f"tokens must be (b, {c.n_tokens}), got {tuple(tokens.shape)}")
        if tokens.numel() and not (0 <= int(tokens.min()) and int(tokens.max()) < c.n_codes):
            raise ValueError(
                f"codes must lie in [0, {c.n_codes}), got [{int(tokens.min())}, {int(tokens.max())}]"
            )
        grid = tokens.view(-1, c.grid, c.grid)  # (b, h, w)
        return torch.sigmoid(self.decoder(self.quantizer.lookup(grid)))  # (b, c, H, W)


__all__ = ["VQVAE", "Quantized", "ResBlock", "VQConfig", "VQOutput", "VectorQuantizer"]
