"""``asr``'s training loss and its metrics: hybrid CTC/attention (Watanabe et al. 2017),
the decoder's teacher-forced cross entropy and the encoder's CTC head, weighted."""

from __future__ import annotations

from collections.abc import Mapping

import torch.nn.functional as F
from torch import nn

from qkv.data.tokenizers import PAD_ID
from qkv.training.objective import Batch, LossOutput
from qkv.training.objectives import token_cross_entropy


def hybrid_loss(
    model: nn.Module, batch: Batch, ctc_weight: float, *, label_smoothing: float = 0.0
) -> LossOutput:
    """``(1 - ctc_weight) CE + ctc_weight CTC`` in training, the cross entropy as the loss
    in evaluation; both sums over the transcripts (the CTC's in ``logs["ctc"]``, the pad id
    as its blank) of a model with a CTC head."""
    logits, log_probs, enc_mask = model(
        batch["src"], batch["tgt_in"], src_padding_mask=batch["src_padding_mask"],
        tgt_padding_mask=batch["tgt_padding_mask"], ctc=True,
    )  # fmt: skip
    ce, n, correct = token_cross_entropy(logits, batch["tgt_out"], label_smoothing=label_smoothing)
    ctc = F.ctc_loss(
        log_probs.transpose(0, 1), batch["tgt_in"][:, 1:], enc_mask.sum(-1),
        batch["tgt_padding_mask"].sum(-1) - 1, blank=PAD_ID, reduction="sum",
        zero_infinity=True,
    )  # fmt: skip
    logs = {"correct": correct, "ctc": float(ctc.detach())}
    if not model.training:
        return LossOutput(ce, n, logs)
    return LossOutput((1 - ctc_weight) * ce + ctc_weight * ctc, n, logs)


def hybrid_metrics(
    metrics: dict[str, float], n: int, logs: Mapping[str, float]
) -> dict[str, float]:
    """The objective's ``metrics`` (teacher-forced ``loss``, ``ppl``, ``token_acc``) and
    ``ctc_loss`` (nats per transcript token) when :func:`hybrid_loss` logged the CTC's sum."""
    if "ctc" in logs:
        metrics["ctc_loss"] = logs["ctc"] / max(n, 1)
    return metrics


__all__ = ["hybrid_loss", "hybrid_metrics"]
