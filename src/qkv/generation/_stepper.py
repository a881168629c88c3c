"""A uniform incremental-decoding view of qkv's generative models.

``Stepper`` hides the difference between a decoder-only LM (the prompt is the prefix) and an
encoder-decoder (the source is encoded once; decoding starts from BOS), and between decoding
with a KV cache (:func:`~qkv.generation.steps.prefill` once, then
:func:`~qkv.generation.steps.decode_one_token` per step) and without one (re-run the whole
prefix uncached: the readable reference the cache is tested against).
"""

from __future__ import annotations

import torch
from torch import Tensor

from qkv.generation.protocols import Generative, LeanStep, is_encoder_decoder
from qkv.generation.steps import decode_one_token, prefill


def check_inputs(inputs: Tensor, padding_mask: Tensor | None) -> Tensor:
    """Validate ``(b, s)`` ids and their mask; returns the mask (all True by default).

    Raises:
        ValueError: ids that are not ``(b, s)`` integers, or a mask of another shape/dtype.
    """
    if inputs.ndim != 2 or inputs.dtype not in (torch.long, torch.int):
        raise ValueError(
            f"inputs must be (b, s) integer ids, got {inputs.dtype} {tuple(inputs.shape)}"
        )
    if padding_mask is None:
        return torch.ones(inputs.shape, dtype=torch.bool, device=inputs.device)
    if padding_mask.shape != inputs.shape or padding_mask.dtype != torch.bool:
        raise ValueError(
            f"padding_mask must be a bool tensor shaped like inputs {tuple(inputs.shape)}, "
            f"got {padding_mask.dtype} {tuple(padding_mask.shape)}"
        )
    return padding_mask


def check_source(model: Generative, inputs: Tensor, padding_mask: Tensor | None) -> Tensor:
    """:func:`check_inputs`, except that an encoder-decoder may read a float source: an image
    batch ``(b, c, H, W)`` (a captioner) or features ``(b, t, n)`` (Whisper's log-mel
    frames). Without a padding mask such a source's mask is one True per row, ``(b, 1)``;
    right-padded features take a ``(b, t)`` mask over their second axis.

    Raises:
        ValueError: a mask with an image batch, a features mask that is not ``(b, t)``
            bool, or what :func:`check_inputs` refuses (float inputs of a causal LM among
            them).
    """
    if not (inputs.is_floating_point() and is_encoder_decoder(model)):
        return check_inputs(inputs, padding_mask)
    if padding_mask is None:
        return torch.ones(inputs.shape[0], 1, dtype=torch.bool, device=inputs.device)
    if inputs.ndim != 3:
        raise ValueError(
            f"a float source of shape {tuple(inputs.shape)} (an image batch) has no padding: "
            "padding_mask must be None"
        )
    shape = tuple(inputs.shape[:2])
    if tuple(padding_mask.shape) != shape or padding_mask.dtype != torch.bool:
        raise ValueError(
            f"padding_mask of a float source must be a (b, t) bool tensor over its second "
            f"axis {shape}, got {padding_mask.dtype} {tuple(padding_mask.shape)}"
        )
    return padding_mask


class Stepper:
    """Prefill once, then decode one token at a time.

    Args:
        model: a causal LM or an encoder-decoder (see :mod:`qkv.generation.protocols`).
        inputs: ``(b, s)`` prompt (LM) or source (seq2seq) ids, or a float source of any
            shape for an encoder-decoder (an image batch).
        padding_mask: ``(b, s)`` bool, True = real token (right padding); default all real.
        max_new_tokens: decoding budget (sizes the caches).
        bos_id: first decoder token for seq2seq models.
        use_cache: decode with KV caches (fast) or by re-running the prefix (reference).
        beams: rows per input (beam search): each input's row is repeated ``beams`` times
            (``b * beams`` rows, input ``i``'s beams adjacent) before the caches are made,
            so the caches are allocated once at their final size. A source is encoded once.
    """

    def __init__(
        self,
        model: Generative,
        inputs: Tensor,
        padding_mask: Tensor | None,
        max_new_tokens: int,
        *,
        bos_id: int,
        use_cache: bool,
        beams: int = 1,
    ) -> None:
        dense = inputs.is_floating_point() and is_encoder_decoder(model)  # images or features
        padding_mask = check_source(model, inputs, padding_mask)
        b, s = padding_mask.shape
        self.seq2seq = is_encoder_decoder(model)
        if not bool(padding_mask.any(-1).all()) and not self.seq2seq:
            raise ValueError("every prompt needs at least one real token")
        self.model, self.device = model, inputs.device
        self.padded = not bool(padding_mask.all())
        param = next(model.parameters())
        self.memory: Tensor | None = None
        self.src_padding_mask: Tensor | None = None
        if self.seq2seq:
            # a float source is encoded unmasked unless it is padded (audio frames)
            mask = padding_mask if not dense or self.padded else None
            self.memory = model.encode(inputs, src_padding_mask=mask)  # type: ignore[union-attr]  # (b, s_src, d)
            # without padding the mask says nothing: None keeps attention's unmasked path
            self.src_padding_mask = padding_mask if self.padded else None
            self.padded = False  # the decoder's own tokens are never padded
            tokens = torch.full((b, 1), bos_id, dtype=torch.long, device=self.device)
            prefix_mask = torch.ones(b, 1, dtype=torch.bool, device=self.device)
            last = torch.zeros(b, 1, dtype=torch.long, device=self.device)  # BOS at 0
            s = 1
        else:
            # left-align the real tokens at the end so every row's next token is at index s
            lengths = padding_mask.sum(-1)
            order = torch.argsort(padding_mask.long(), dim=-1, stable=True)  # pads, then prompt
            tokens = inputs.gather(1, order)  # (b, s): pads first, then the prompt
            prefix_mask = padding_mask.gather(1, order)
            last = (lengths - 1)[:, None]  # (b, 1): the last prompt token's position
        cap = s + max_new_tokens
        # Preallocated (b, cap) buffers, written in place by append (no per-step concat):
        # the new tokens are real and their positions follow each row's last one, so
        # mask and positions are known in full now.
        self._tokens = torch.zeros(b, cap, dtype=torch.long, device=self.device)
        self._tokens[:, :s] = tokens
        self._mask = torch.ones(b, cap, dtype=torch.bool, device=self.device)
        self._mask[:, :s] = prefix_mask
        offsets = torch.arange(cap, device=self.device) - (s - 1)  # (cap,)
        self._positions = (last + offsets).clamp_min(0)  # (b, cap); pads get 0
        self._len = s  # tokens held (prompt or BOS, then the appended ones)
        self.cache = None
        # the model's lean one-token step (qkv.models._lean), made after the prefill; None:
        # the model call (no lean step for this model, or not made yet)
        self._step: LeanStep | None = None
        self._step_ready = False  # whether _make_step ran
        # the cache first: its memory check refuses a beam no memory holds before the
        # source's memory and the buffers are copied for every beam
        cache = (
            model.make_cache(b * beams, cap, dtype=param.dtype, device=self.device)
            if use_cache
            else None
        )
        if beams > 1:
            self.reorder(torch.arange(b, device=self.device).repeat_interleave(beams))
        self.cache = cache
        self._fed = 0  # how many of the tokens the cache has seen

    @property
    def tokens(self) -> Tensor:
        """``(b, n)`` long: the prefix so far (left-padded prompt or BOS, new tokens)."""
        return self._tokens[:, : self._len]

    @property
    def mask(self) -> Tensor:
        """``(b, n)`` bool, True = real token, over :attr:`tokens`."""
        return self._mask[:, : self._len]

    @property
    def positions(self) -> Tensor:
        """``(b, n)`` long positions of :attr:`tokens` (pads at 0)."""
        return self._positions[:, : self._len]

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    def logits(self) -> Tensor:
        """Next-token logits ``(b, vocab)`` for the current prefix (float32)."""
        # Without padding the masks say nothing the causal mask does not: pass None so the
        # attention takes its unmasked fast path at every layer of every step.
        mask = self.mask if self.padded else None
        src = {"memory": self.memory, "src_padding_mask": self.src_padding_mask}
        if self.cache is None:  # the reference: the whole prefix, uncached
            out = prefill(
                self.model,
                self.tokens,
                cache=None,
                padding_mask=mask,
                positions=self.positions,
                **src,
            )[:, -1]
        elif self._fed == 0:
            out = prefill(
                self.model,
                self.tokens,
                cache=self.cache,
                padding_mask=mask,
                positions=self.positions,
                **src,
            )[:, -1]
        else:
            n = self._len
            if n != self._fed + 1:
                raise RuntimeError(
                    f"a cached step feeds exactly one new token, got {n - self._fed}"
                )
            if not self._step_ready:
                self._step = self._make_step()
                self._step_ready = True
            step = self._step
            if step is not None and step.usable():
                out = step(self._tokens[:, n - 1 : n], self._positions[:, n - 1 : n], mask)
                self._fed = n
                return out.float()  # (b, vocab)
            out = decode_one_token(
                self.model,
                self._tokens[:, n - 1],
                cache=self.cache,
                positions=self._positions[:, n - 1],
                padding_mask=mask,
                **src,
            )
        self._fed = self._len
        return out.float()  # (b, vocab)

    def _make_step(self) -> LeanStep | None:
        """The model's lean one-token step over the filled caches, or None (models without
        ``make_decode_step``, or ones it does not cover). Made once per generation: the
        checks of shapes, dtypes, masks and hooks run here, not per step."""
        make = getattr(self.model, "make_decode_step", None)
        if make is None or not callable(make):
            return None
        if self.seq2seq:
            return make(self.cache, src_padding_mask=self.src_padding_mask)  # type: ignore[no-any-return]
        mask = self._mask[:, : self._fed] if self.padded else None
        return make(self.cache, padding_mask=mask)  # type: ignore[no-any-return]

    def append(self, token: Tensor) -> None:
        """Append ``token`` ``(b,)`` to every row."""
        self._tokens[:, self._len] = token
        self._len += 1

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` (beam search), in that order."""
        self._tokens = self._tokens.index_select(0, index)
        self._mask = self._mask.index_select(0, index)
        self._positions = self._positions.index_select(0, index)
        if self.memory is not None:
            self.memory = self.memory.index_select(0, index)
        if self.src_padding_mask is not None:
            self.src_padding_mask = self.src_padding_mask.index_select(0, index)
        if self.cache is not None:
            for layer in self.cache:
                for c in layer if isinstance(layer, (tuple, list)) else (layer,):
                    c.reorder(index)
        if self._step is not None:  # what it prepared once follows the rows
            self._step.reorder(index)
