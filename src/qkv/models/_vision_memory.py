"""Parameter and buffer counts of the vision families (Swin, DETR, CLIP, the captioner) from their configs:
the arithmetic of :func:`qkv.models.memory.parameter_count` for models that are not one
encoder/decoder stack of equal layers."""

from __future__ import annotations

from typing import Any

#: Feed-forward activations with a gate (three matrices, not two); as in memory.py.
_GATED = frozenset({"swiglu", "geglu", "geglu_tanh"})


def _linear(n_in: int, n_out: int, bias: bool) -> int:
    return n_in * n_out + (n_out if bias else 0)


def _norm(cfg: Any, d: int) -> int:
    return d * (2 if cfg.norm == "layer" else 1)


def _attention(d: int, bias: bool) -> int:
    return _linear(d, 3 * d, bias) + _linear(d, d, bias)


def _feedforward(cfg: Any, d: int, d_ff: int) -> int:
    n_in = 2 if cfg.activation in _GATED else 1
    return n_in * _linear(d, d_ff, cfg.bias) + _linear(d_ff, d, cfg.bias)


def _swin_windows(cfg: Any) -> list[int]:
    """The window side of every block (a stage whose grid fits one window uses the grid)."""
    return [
        min(side, cfg.window_size)
        for depth, side in zip(cfg.depths, cfg.stage_grids)
        for _ in range(depth)
    ]


def swin_parameter_count(cfg: Any) -> int:
    """Parameters of :class:`~qkv.models.swin.Swin` for a ``SwinConfig``."""
    d = cfg.d_model
    total = _linear(cfg.in_channels * cfg.patch_size**2, d, True) + _norm(cfg, d)
    total += cfg.n_patches * d if cfg.pos == "learned" else 0
    windows = iter(_swin_windows(cfg))
    for i, (depth, width, heads) in enumerate(
        zip(cfg.depths, cfg.stage_widths, cfg.heads_per_stage)
    ):
        for _ in range(depth):
            m = next(windows)
            total += _attention(width, cfg.bias) + _feedforward(cfg, width, cfg.d_ff * 2**i)
            total += 2 * _norm(cfg, width) + (2 * m - 1) ** 2 * heads
        if i < cfg.n_stages - 1:
            total += _norm(cfg, 4 * width) + 4 * width * 2 * width
    last = cfg.stage_widths[-1]
    head = _linear(last, cfg.n_classes, True) if cfg.n_classes else 0
    return total + _norm(cfg, last) + head


def swin_buffer_count(cfg: Any) -> int:
    """The relative position index of every block, ``(M^2)^2`` each."""
    return sum(m**4 for m in _swin_windows(cfg))


def detr_parameter_count(cfg: Any) -> int:
    """Parameters of :class:`~qkv.models.detr.DETR` for a ``DETRConfig``."""
    d, chans = cfg.d_model, cfg.backbone_channels
    if cfg.backbone == "cnn":
        ins = [cfg.in_channels, *chans[:-1]]
        # a bias per channel, or batch norm's weight and bias
        per_channel = 2 if cfg.backbone_norm else 1
        total = sum(c_in * c * 9 + per_channel * c for c_in, c in zip(ins, chans))
    elif cfg.backbone == "patch":
        total = cfg.in_channels * cfg.patch_size**2 * chans[0] + chans[0]
    else:
        total = 0
    total += _linear(chans[-1], d, True) + cfg.n_queries * d  # input projection, queries
    ff = _feedforward(cfg, d, cfg.d_ff)
    total += cfg.n_encoder_layers * (_attention(d, cfg.bias) + ff + 2 * _norm(cfg, d))
    total += cfg.n_decoder_layers * (2 * _attention(d, cfg.bias) + ff + 3 * _norm(cfg, d))
    total += _norm(cfg, d)  # the decoder's final norm
    return (
        total + _linear(d, cfg.n_classes + 1, True) + 2 * _linear(d, d, True) + _linear(d, 4, True)
    )


def clip_vision_count(cfg: Any) -> int:
    """Parameters of :class:`~qkv.models.clip.CLIPVisionTower` (``vision_*`` fields): a
    bias-free patch embedding, class token, positions, a norm before and after the layers."""
    dv = cfg.vision_d_model
    total = cfg.in_channels * cfg.patch_size**2 * dv + (2 + cfg.n_patches) * dv
    total += 2 * _norm(cfg, dv)
    return total + cfg.vision_n_layers * (
        _attention(dv, cfg.bias) + _feedforward(cfg, dv, cfg.vision_d_ff) + 2 * _norm(cfg, dv)
    )


def llava_extra_count(cfg: Any) -> int:
    """Parameters of :class:`~qkv.models.llava.Llava` beyond its language model: the image
    tower and the two-layer projector."""
    dv, d = cfg.vision_d_model, cfg.d_model
    return clip_vision_count(cfg) + _linear(dv, d, True) + _linear(d, d, True)


def clip_parameter_count(cfg: Any) -> int:
    """Parameters of :class:`~qkv.models.clip.CLIP` for a ``CLIPConfig``: two pre-norm
    towers with final norms, bias-free projections, one logit scale."""
    d = cfg.d_model
    vision = clip_vision_count(cfg) + cfg.vision_d_model * cfg.embed_dim
    text = (cfg.vocab_size + cfg.max_len) * d + _norm(cfg, d) + d * cfg.embed_dim
    text += cfg.n_layers * (
        _attention(d, cfg.bias) + _feedforward(cfg, d, cfg.d_ff) + 2 * _norm(cfg, d)
    )
    return vision + text + 1


def captioner_parameter_count(cfg: Any) -> int:
    """Parameters of :class:`~qkv.models.captioner.Captioner` for a ``CaptionerConfig``."""
    d = cfg.d_model
    ff = _feedforward(cfg, d, cfg.d_ff)
    total = _linear(cfg.in_channels * cfg.patch_size**2, d, True) + d  # patches, class token
    total += (1 + cfg.n_patches) * d  # the encoder's positions
    total += cfg.n_encoder_layers * (_attention(d, cfg.bias) + ff + 2 * _norm(cfg, d))
    total += cfg.vocab_size * d + cfg.max_len * d  # tokens, the decoder's positions
    total += cfg.n_decoder_layers * (2 * _attention(d, cfg.bias) + ff + 3 * _norm(cfg, d))
    total += 2 * _norm(cfg, d)  # the final norms of both stacks
    return total + (0 if cfg.tie_embeddings else cfg.vocab_size * d)


PARAMETER_COUNTS = {
    "swin": swin_parameter_count,
    "detr": detr_parameter_count,
    "clip": clip_parameter_count,
    "captioner": captioner_parameter_count,
}
BUFFER_COUNTS = {
    "swin": swin_buffer_count,
    "detr": lambda cfg: 0,
    "clip": lambda cfg: 0,
    "captioner": lambda cfg: 0,
}

__all__ = [
    "BUFFER_COUNTS",
    "PARAMETER_COUNTS",
    "captioner_parameter_count",
    "clip_parameter_count",
    "clip_vision_count",
    "detr_parameter_count",
    "llava_extra_count",
    "swin_buffer_count",
    "swin_parameter_count",
]
