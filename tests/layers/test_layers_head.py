"""OutputHead: nn.Linear's parameters and answers, with a decoding copy of the weight."""

from __future__ import annotations

import torch
from torch import nn

from qkv.layers import OutputHead


def test_decoding_copy_gives_linear_answers_and_is_released():
    torch.manual_seed(0)
    head, ref = OutputHead(16, 50), nn.Linear(16, 50)
    ref.load_state_dict(head.state_dict())  # same parameter names
    head.prepare_decoding()
    for rows in (1, 8, 64, 65):  # up to 64 rows take the copy; more take F.linear
        x = torch.randn(rows, 1, 16)
        with torch.inference_mode():
            torch.testing.assert_close(head(x), ref(x), atol=1e-5, rtol=1e-5)
    x = torch.randn(2, 16, requires_grad=True)  # gradients: nn.Linear's path
    head(x).sum().backward()
    assert head.weight.grad is not None and x.grad is not None
    head.release_decoding()
    assert head._decoding_weight is None


def test_generate_prepares_and_releases_the_heads():
    from qkv.generation import generate
    from qkv.models import from_preset

    model = from_preset("gpt2-tiny", vocab_size=20)
    seen = []
    original = OutputHead.forward

    def spy(self, x):
        seen.append(self._decoding_weight is not None)
        return original(self, x)

    OutputHead.forward = spy
    try:
        generate(model, torch.randint(3, 20, (2, 5)), max_new_tokens=9, eos_id=None)
    finally:
        OutputHead.forward = original
    assert all(seen) and len(seen) == 9
    assert model.lm_head._decoding_weight is None
