import pytest
import torch

from qkv.models import EncoderConfig, from_preset


def test_sequence_classifier_reads_the_pooled_state():
    torch.manual_seed(0)
    m = from_preset("bert-tiny", n_classes=3, dropout=0.0, attn_dropout=0.0).eval()
    ids = torch.randint(0, m.config.vocab_size, (2, 6))
    out = m(ids)
    assert out.logits.shape == (2, 3)
    torch.testing.assert_close(out.logits, m.classifier(m.pooler(out.last_hidden_state)))
    out.logits.sum().backward()
    assert m.classifier.weight.grad is not None


def test_classifier_config_errors():
    with pytest.raises(ValueError, match=r"n_classes \(3\) needs pooler=True"):
        EncoderConfig(n_classes=3, pooler=False)
    with pytest.raises(ValueError, match="n_classes must be an int >= 0, got -1"):
        EncoderConfig(n_classes=-1)
