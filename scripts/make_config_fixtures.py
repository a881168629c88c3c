"""Write ``tests/fixtures/configs/``: saved models and ``config.json`` files of every family,
in the format of the code that runs this script, so later formats can be tested to still
load them (``tests/models/test_models_config_fixtures.py``).

Each case is a directory: ``config.json`` always; ``model.safetensors`` too for the cases
that save weights. ``manifest.json`` records, from the code that wrote them, each case's
parameter and buffer counts and, for saved models, the output of one fixed forward pass.

Run from the repository root (the fixtures in git were made with commit 3827402's code):

    PYTHONPATH=src python scripts/make_config_fixtures.py
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

import qkv.models as M

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "configs"

SMALL: dict[str, Any] = {"d_model": 32, "n_heads": 4, "d_ff": 64, "dropout": 0.0}
TEXT: dict[str, Any] = {**SMALL, "vocab_size": 50, "max_len": 16}

#: name -> (config, save the weights too?)
CASES: dict[str, tuple[M.TransformerConfig, bool]] = {
    "lm_favor": (
        M.LMConfig(**TEXT, n_layers=2, attn_kind="favor", favor_features=16, pos="rope"),
        True,
    ),
    "lm_lsh_reversible": (
        M.LMConfig(
            **TEXT,
            n_layers=2,
            attn_kind="lsh",
            lsh_bucket_size=4,
            lsh_n_hashes=2,
            lsh_seed=3,
            reversible=True,
            ff_chunk_size=4,
            pos="learned",
        ),
        True,
    ),
    "encoder_linformer": (
        M.EncoderConfig(**TEXT, n_layers=2, attn_kind="linformer", linformer_k=8, n_classes=3),
        True,
    ),
    "lm_gqa_window": (
        M.LMConfig(**TEXT, n_layers=2, n_kv_heads=2, head_dim=16, sliding_window=4, pos="rope"),
        True,
    ),
    "t5_tiny": (M.preset_config("t5-tiny", dropout=0.0), True),
    "swin_tiny": (M.preset_config("swin-tiny", drop_path=0.0), True),
    "vit_tiny": (M.preset_config("vit-tiny", dropout=0.0), True),
    "lm_xl": (
        M.LMConfig(**TEXT, n_layers=2, pos="xl", mem_len=4, segment_len=4, attn_dropout=0.0),
        False,
    ),
    "seq2seq_pruned": (
        M.Seq2SeqConfig(
            **TEXT,
            n_encoder_layers=2,
            n_decoder_layers=1,
            pruned_heads={"encoder.layers.1.self_attn": [0, 2]},
        ),
        False,
    ),
    "detr_tiny": (M.preset_config("detr-tiny"), False),
    "clip_tiny": (M.preset_config("clip-tiny"), False),
    "llava_tiny": (M.preset_config("llava-tiny"), False),
    "captioner": (M.CaptionerConfig(d_model=32, n_heads=4, d_ff=64), False),
    "whisper_tiny": (
        M.WhisperConfig(
            **SMALL,
            vocab_size=50,
            max_len=16,
            n_mels=8,
            max_frames=32,
            n_encoder_layers=1,
            n_decoder_layers=1,
        ),
        False,
    ),
    "xlnet_tiny": (M.XLNetConfig(**TEXT, n_layers=2), False),
}


def _input(cfg: M.TransformerConfig) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if cfg.family in ("vit", "swin"):
        return torch.randn(2, cfg.in_channels, cfg.image_size, cfg.image_size, generator=g)  # type: ignore[attr-defined]
    return torch.randint(1, cfg.vocab_size, (2, 8), generator=g)  # type: ignore[attr-defined]


def _forward(model: M.TransformerModel) -> list[float]:
    """The first values and the sum of one fixed forward pass's output."""
    cfg = model.config
    x = _input(cfg)
    with torch.no_grad():
        if cfg.family == "seq2seq":
            out = model(x, x[:, :5])
        elif cfg.family == "encoder":
            out = model(x).logits
        else:
            out = model(x)
    out = out.float()
    return [float(out.sum()), *[float(v) for v in out.flatten()[:8]]]


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    manifest: dict[str, Any] = {}
    for name, (cfg, weights) in CASES.items():
        torch.manual_seed(0)
        model = M.build(cfg).eval()
        d = OUT / name
        entry: dict[str, Any] = {
            "parameters": M.count_parameters(model),
            "buffers": sum(b.numel() for b in model.buffers()),
        }
        if weights:
            model.save_pretrained(d)
            entry["output"] = _forward(model)
        else:
            d.mkdir()
            (d / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
        manifest[name] = entry
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    print(f"wrote {len(CASES)} cases to {OUT}")


if __name__ == "__main__":
    main()
