"""What every family file shares: the :class:`HFFamily` record and its ``ignored``
predicate, configuration helpers (collecting problems, the start of every ``to_hf``, the
hyperparameter names of BERT-style configs) and the name maps of activations."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from qkv.interop._convert import HFConversionError, Rule
from qkv.models import EncoderConfig, TransformerConfig, ViTConfig

#: Hugging Face ``ACT2FN`` names -> qkv activations (exact equivalents only: ``gelu_fast``
#: and ``quick_gelu`` are other approximations and are refused).
ACT_FROM_HF: dict[str, str] = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}
#: qkv activations -> the Hugging Face name written by ``to_hf``.
ACT_TO_HF: dict[str, str] = {
    "gelu": "gelu",
    "gelu_tanh": "gelu_new",
    "relu": "relu",
    "silu": "silu",
}


class Issues:
    """Collects what a configuration cannot express, to raise once with all of it.

    Args:
        what: the start of the error message (names the directory or model).
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.items: list[str] = []

    def add(self, message: str) -> None:
        """Record one problem."""
        self.items.append(message)

    def expect(
        self, hf: Mapping[str, Any], key: str, allowed: tuple[Any, ...], default: Any
    ) -> None:
        """Record a problem when ``hf[key]`` (``default`` when absent) is not in ``allowed``."""
        value = hf.get(key, default)
        if value not in allowed:
            ok = " or ".join(repr(a) for a in allowed)
            self.add(f"{key}={value!r} (qkv supports {ok})")

    def activation(self, key: str, value: Any) -> str:
        """The qkv activation of a Hugging Face activation name (``"gelu"`` after a problem)."""
        if value not in ACT_FROM_HF:
            self.add(f"{key}={value!r} (qkv supports {sorted(ACT_FROM_HF)})")
            return "gelu"
        return ACT_FROM_HF[value]

    def raise_if_any(self) -> None:
        """Raise :class:`HFConversionError` listing every recorded problem.

        Raises:
            HFConversionError: when a problem was recorded.
        """
        if self.items:
            raise HFConversionError(self.what, unsupported=self.items)


def required(hf: Mapping[str, Any], issues: Issues, *keys: str) -> None:
    """Record every key of ``keys`` that ``hf`` lacks."""
    for key in keys:
        if hf.get(key) is None:
            issues.add(f"{key} is missing from config.json")


def pad_id(hf: Mapping[str, Any], default: int | None = None) -> int | None:
    """``pad_token_id`` when it is a token of the vocabulary, else None (qkv uses it only to
    keep the padding row's embedding out of training)."""
    pad = hf.get("pad_token_id", default)
    vocab = hf.get("vocab_size")
    ok = isinstance(pad, int) and isinstance(vocab, int) and 0 <= pad < vocab
    return pad if ok else None


def tied(hf: Mapping[str, Any], weights: Mapping[str, Tensor], emb: str, out: str) -> bool:
    """Whether the output projection ``out`` is the embedding ``emb``.

    As in ``transformers`` 5: tied when ``tie_word_embeddings`` (default True) and the
    checkpoint either lacks ``out`` or holds an identical copy of ``emb`` there.
    """
    if hf.get("tie_word_embeddings", True) is False:
        return False
    if out not in weights:
        return True
    return emb in weights and torch.equal(weights[emb], weights[out])


def activation_to_hf(cfg: TransformerConfig, issues: Issues, allowed: tuple[str, ...]) -> str:
    """The Hugging Face name of ``cfg.activation`` among ``allowed`` qkv activations."""
    if cfg.activation not in allowed:
        issues.add(f"activation={cfg.activation!r} (the family supports {allowed})")
        return "gelu"
    return ACT_TO_HF[cfg.activation]


def to_hf_issues(
    cfg: TransformerConfig, family: str, kind: type[TransformerConfig], *, article: str = "a"
) -> Issues:
    """Start writing ``cfg`` as ``family``: the collector of its problems, once ``cfg`` is
    known to be a ``kind`` (``"cannot write this model as BERT"``).

    Args:
        cfg: the qkv config to write.
        family: the family as the messages name it (``"BERT"``, ``"GPT-2"``).
        kind: the qkv config class the family writes (:class:`~qkv.models.EncoderConfig`, ...).
        article: ``"a"`` or ``"an"``, as ``kind``'s name is read (``"an LMConfig"``).

    Returns:
        The :class:`Issues` to record the family's other problems in; the caller raises it.

    Raises:
        HFConversionError: at once when ``cfg`` is not a ``kind`` (nothing else can be
            checked then).
    """
    issues = Issues(f"cannot write this model as {family}")
    if not isinstance(cfg, kind):
        issues.add(f"{family} needs {article} {kind.__name__}, got {type(cfg).__name__}")
        issues.raise_if_any()
    return issues


def common_to_hf(cfg: TransformerConfig, issues: Issues, **expected: Any) -> None:
    """Record every ``cfg`` field that differs from the value the family hard-wires, and
    pruned heads (the families' weight maps expect every head)."""
    if cfg.pruned_heads:
        issues.add(f"pruned_heads={cfg.pruned_heads!r} (export the unpruned model)")
    kind = getattr(cfg, "attn_kind", "softmax")  # EfficientConfig's
    if kind != "softmax":
        issues.add(f"attn_kind={kind!r} (the family has softmax attention)")
    for name, value in expected.items():
        got = getattr(cfg, name)
        if got != value:
            issues.add(f"{name}={got!r} (the family needs {value!r})")


# -- BERT-style configs ----------------------------------------------------------------
#: ``config.json`` keys that every BERT-style config (``BertConfig``, and ``ViTConfig``, which
#: names its encoder as BERT does) must hold; :func:`bert_style_fields` reads them.
BERT_STYLE_REQUIRED: tuple[str, ...] = (
    "hidden_size",
    "num_attention_heads",
    "intermediate_size",
    "num_hidden_layers",
)


def bert_style_fields(hf: Mapping[str, Any], issues: Issues, *, dropout: float) -> dict[str, Any]:
    """The qkv config fields that a BERT-style ``config.json`` names as BERT does: widths,
    depth, ``hidden_act``, LayerNorm epsilon, dropouts and initialization scale.

    Call it after the family's other checks (an unknown ``hidden_act`` is recorded last) and
    before ``issues.raise_if_any()``; the keys of :data:`BERT_STYLE_REQUIRED` are the
    caller's to require.

    Args:
        hf: the ``config.json`` dict.
        issues: where an unknown ``hidden_act`` is recorded.
        dropout: the family's default for both dropouts when absent (BERT 0.1, ViT 0.0).

    Returns:
        ``d_model``, ``n_heads``, ``d_ff``, ``n_layers``, ``activation``, ``norm_eps``,
        ``dropout``, ``attn_dropout`` and ``init_std``.
    """
    act = issues.activation("hidden_act", hf.get("hidden_act", "gelu"))
    return {
        "d_model": hf.get("hidden_size"),
        "n_heads": hf.get("num_attention_heads"),
        "d_ff": hf.get("intermediate_size"),
        "n_layers": hf.get("num_hidden_layers"),
        "activation": act,
        "norm_eps": hf.get("layer_norm_eps", 1e-12),
        "dropout": hf.get("hidden_dropout_prob", dropout),
        "attn_dropout": hf.get("attention_probs_dropout_prob", dropout),
        "init_std": hf.get("initializer_range", 0.02),
    }


def bert_style_to_hf(cfg: EncoderConfig | ViTConfig, issues: Issues) -> dict[str, Any]:
    """The ``config.json`` entries of :func:`bert_style_fields`, written from ``cfg``.

    Call it before ``issues.raise_if_any()``: an activation without a Hugging Face name is
    recorded in ``issues``.
    """
    return {
        "hidden_size": cfg.d_model,
        "num_attention_heads": cfg.n_heads,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layers,
        "hidden_act": activation_to_hf(cfg, issues, ("gelu", "gelu_tanh", "relu", "silu")),
        "layer_norm_eps": cfg.norm_eps,
        "hidden_dropout_prob": cfg.dropout,
        "attention_probs_dropout_prob": cfg.attn_dropout,
        "initializer_range": cfg.init_std,
    }


# -- families --------------------------------------------------------------------------
def ignore_exactly(names: Collection[str]) -> Callable[[str], bool]:
    """An :attr:`HFFamily.ignored` predicate: true for exactly the checkpoint names ``names``."""
    known = frozenset(names)
    return known.__contains__


def _no_ignored(name: str) -> bool:
    return False


def _no_finalize(model: nn.Module) -> None:
    return None


@dataclass(frozen=True)
class HFFamily:
    """A model family's conversion: its config map, weight map and naming.

    Attributes:
        name: the family (``"bert"``, ``"gpt2"``, ...).
        model_types: ``config.json`` ``model_type`` values it reads.
        config_family: the qkv config family it produces (``"encoder"``, ``"lm"``, ...).
        prefix: the base-model prefix of task-head checkpoints (``"bert."``), stripped when
            loading; "" when the family has none.
        heads: names (prefixes) of tensors outside the base model (``"cls."``,
            ``"lm_head."``), never prefixed.
        base_architectures: architectures saved without the prefix (``"BertModel"``).
        config_from_hf: ``(config.json, checkpoint tensors, error prefix) -> qkv config``
            (the tensors decide what the config cannot: which heads exist, tied
            projections); raises :class:`~qkv.interop.HFConversionError` listing every
            unsupported value.
        config_to_hf: ``qkv config -> config.json`` dict.
        weight_map: ``qkv config -> [Rule]`` with Hugging Face names without the prefix.
        ignored: checkpoint names deliberately left unread (old buffers, heads qkv does not
            model).
        rename: legacy checkpoint names -> current names.
        finalize: applied to the loaded model (e.g. freezing fixed tables).
    """

    name: str
    model_types: tuple[str, ...]
    config_family: str
    prefix: str
    heads: tuple[str, ...]
    base_architectures: tuple[str, ...]
    config_from_hf: Callable[[Mapping[str, Any], Mapping[str, Tensor], str], TransformerConfig]
    config_to_hf: Callable[[TransformerConfig], dict[str, Any]]
    weight_map: Callable[[TransformerConfig], list[Rule]]
    ignored: Callable[[str], bool] = field(default=_no_ignored)
    rename: Callable[[str], str] = field(default=lambda name: name)
    finalize: Callable[[nn.Module], None] = field(default=_no_finalize)

    def is_head(self, name: str) -> bool:
        """Whether ``name`` lies outside the base model."""
        return any(name == h or name.startswith(h) for h in self.heads)

    def normalize(self, weights: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Checkpoint names -> weight-map names: legacy renames, base prefix stripped."""
        out: dict[str, Tensor] = {}
        p = self.prefix
        for name, t in weights.items():
            name = self.rename(name)
            if p and name.startswith(p):
                name = name[len(p) :]
            out[name] = t
        return out

    def denormalize(self, tensors: Mapping[str, Tensor], architecture: str) -> dict[str, Tensor]:
        """Weight-map names -> the names ``architecture`` stores (base prefix added)."""
        if not self.prefix or architecture in self.base_architectures:
            return dict(tensors)
        return {(n if self.is_head(n) else self.prefix + n): t for n, t in tensors.items()}
