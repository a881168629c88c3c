"""The VQ-VAE image tokenizer: nearest-code choice against brute force, the straight-through
gradient, the loss terms by hand, learning on a tiny set, and the token round trip."""

from __future__ import annotations

import pytest
import torch

from qkv.models.vq import VQVAE, VectorQuantizer, VQConfig


def test_nearest_code_is_the_brute_force_argmin() -> None:
    g = torch.Generator().manual_seed(0)
    vq = VectorQuantizer(n_codes=17, d_code=5)
    with torch.no_grad():
        vq.codebook.copy_(torch.randn(17, 5, generator=g))
    z = torch.randn(200, 5, generator=g)
    brute = torch.stack([((zi[None] - vq.codebook) ** 2).sum(-1).argmin() for zi in z])
    assert torch.equal(vq.nearest(z), brute)


def test_quantizer_losses_and_straight_through_gradient() -> None:
    g = torch.Generator().manual_seed(1)
    vq = VectorQuantizer(n_codes=6, d_code=3)
    with torch.no_grad():
        vq.codebook.copy_(torch.randn(6, 3, generator=g))
    z_e = torch.randn(2, 3, 4, 4, generator=g, requires_grad=True)
    q = vq(z_e)
    e = vq.codebook[q.codes].permute(0, 3, 1, 2)  # (b, d, h, w)
    # the forward value is the code vector itself
    torch.testing.assert_close(q.z_q, e)
    torch.testing.assert_close(q.codebook_loss, ((z_e - e) ** 2).mean())
    torch.testing.assert_close(q.commitment_loss, ((z_e - e) ** 2).mean())
    # straight through: d(sum(w * z_q)) / d z_e = w exactly, and no gradient to the codebook
    w = torch.randn(q.z_q.shape, generator=g)
    (grad,) = torch.autograd.grad((w * q.z_q).sum(), z_e)
    torch.testing.assert_close(grad, w)
    # the codebook loss moves codes only; the commitment loss moves the encoder only
    grad_cb = torch.autograd.grad(q.codebook_loss, [vq.codebook], retain_graph=True)[0]
    assert grad_cb.abs().sum() > 0
    assert (
        torch.autograd.grad(q.codebook_loss, z_e, allow_unused=True, retain_graph=True)[0] is None
    )
    grad_commit = torch.autograd.grad(q.commitment_loss, [vq.codebook], allow_unused=True)[0]
    assert grad_commit is None


def test_init_from_puts_codes_on_encoder_outputs() -> None:
    vq = VectorQuantizer(n_codes=8, d_code=2)
    z = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    vq.init_from(z, torch.Generator().manual_seed(0))
    flat = z.permute(0, 2, 3, 1).reshape(-1, 2)
    # every code is one of the 16 vectors, and all 8 are distinct (16 >= 8: no repeats)
    match = (vq.codebook[:, None] == flat[None]).all(-1)  # (8, 16)
    assert match.any(1).all()
    assert len({int(i) for i in match.float().argmax(1)}) == 8


def _images(n: int) -> torch.Tensor:
    """``n`` 8x8 images of a bright square at a random place."""
    g = torch.Generator().manual_seed(3)
    x = torch.zeros(n, 1, 8, 8)
    for i in range(n):
        r, c = torch.randint(0, 5, (2,), generator=g).tolist()
        x[i, 0, r : r + 4, c : c + 4] = 1.0
    return x


def test_reconstruction_improves_in_a_few_steps() -> None:
    torch.manual_seed(0)
    model = VQVAE(VQConfig(image_size=8, hidden=16, d_code=4, n_codes=16, n_down=1))
    x = _images(32)
    model.quantizer.init_from(model.encoder(x).detach())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = model(x).recon_loss.item()
    for _ in range(60):
        out = model(x)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert model(x).recon_loss.item() < 0.5 * first


def test_token_round_trip_and_shapes() -> None:
    cfg = VQConfig(image_size=8, hidden=8, d_code=4, n_codes=10, n_down=2)
    model = VQVAE(cfg).eval()
    x = _images(5)
    tokens = model.encode(x)
    assert tokens.shape == (5, cfg.n_tokens) == (5, 4) and tokens.dtype == torch.long
    images = model.decode(tokens)
    assert images.shape == x.shape and 0 <= float(images.min()) and float(images.max()) <= 1
    # decoding is the forward pass after quantization: the same reconstruction
    torch.testing.assert_close(images, model(x).recon)
    # the decoded codes' own tokens: encoding z_q = the codebook rows gives the codes back
    e = model.quantizer.lookup(tokens.view(5, 2, 2))
    assert torch.equal(model.quantizer(e).codes.flatten(1), tokens)


def test_config_checks_name_the_values() -> None:
    with pytest.raises(ValueError, match=r"image_size \(30\).*2 \*\* n_down \(4\)"):
        VQConfig(image_size=30, n_down=2)
    with pytest.raises(ValueError, match="n_codes"):
        VQConfig(n_codes=1)
    with pytest.raises(ValueError, match=r"unknown VQConfig fields \['nope'\]"):
        VQConfig.from_dict({"nope": 1})
    cfg = VQConfig(hidden=8)
    assert VQConfig.from_dict(cfg.to_dict()) == cfg
    model = VQVAE(cfg)
    with pytest.raises(ValueError, match=r"images must be \(b, 1, 28, 28\)"):
        model(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 128\)"):
        model.decode(torch.full((1, 49), 128))
