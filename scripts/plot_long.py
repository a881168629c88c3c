"""Plot ``qkv bench long`` results: the speed section (forward+backward time and peak
memory against sequence length, one line per attention kind) and the equal-training-time
comparisons (KJV bits per character, ListOps accuracy, against training tokens per second).

    python scripts/plot_long.py speed4k.json speed16k.json quality.json listops.json \
        --out docs/efficient.png

Any number of ``--json`` files of ``qkv bench long``; rows are pooled by section.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from matplotlib.figure import Figure


def rows(paths: list[Path]) -> list[dict]:
    """Every ``ok`` row of the files; on the same key the first file's row is kept (a
    rerun's reference row does not replace the main run's)."""
    out: dict[tuple, dict] = {}
    for path in paths:
        data = json.loads(path.read_text())
        if data.get("benchmark") != "long":  # e.g. qkv bench approx's files alongside
            continue
        tag = ""
        if data["config"].get("favor_features"):
            tag = f" m={data['config']['favor_features']}"
        if data["config"].get("n_hashes") != 2:
            tag = f" hashes={data['config']['n_hashes']}"
        for r in data["results"]:
            if r["status"] != "ok":
                continue
            name = r["impl"] + (tag if r["impl"] in ("favor", "lsh") else "")
            out.setdefault((r["section"], name, r["length"], r["mode"]), {**r, "impl": name})
    return list(out.values())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    data = rows(args.files)
    fig = Figure(figsize=(16, 3.6), layout="constrained")
    ax_t, ax_m, ax_q, ax_l = fig.subplots(1, 4)
    speed = [r for r in data if r["section"] == "speed"]
    for impl in sorted({r["impl"] for r in speed}):
        mine = sorted((r for r in speed if r["impl"] == impl), key=lambda r: r["length"])
        lengths = [r["length"] for r in mine]
        ax_t.plot(lengths, [r["time_s"] for r in mine], marker="o", label=impl)
        if all(r["peak_bytes"] for r in mine):
            ax_m.plot(lengths, [r["peak_bytes"] / 2**20 for r in mine], marker="o", label=impl)
    for ax, what in ((ax_t, "fwd+bwd seconds"), (ax_m, "peak MiB (RSS growth)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length (one attention layer, d=512, 8 heads)")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax, section, key, label in (
        (ax_q, "quality", "bpc", "KJV valid bits per character"),
        (ax_l, "listops", "accuracy", "ListOps valid accuracy %"),
    ):
        mine = [r for r in data if r["section"] == section and r.get(key) is not None]
        for r in mine:
            ax.scatter(r["tokens_per_s"], r[key])
            ax.annotate(r["impl"], (r["tokens_per_s"], r[key]), fontsize=8)
        if mine:
            ax.set_title(f"equal training time ({mine[0]['train_s']:.0f} s each), "
                         f"context {mine[0]['length']}", fontsize=9)  # fmt: skip
        ax.set_xlabel("training tokens per second")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
