"""Evaluation metrics: BLEU and chrF (sacrebleu), ROUGE (rouge-score), CIDEr (pycocoevalcap),
word and character error rates (jiwer), exact match, accuracy, perplexity, bpc, and COCO
detection mAP (torchmetrics or pycocotools).

Percentages (``bleu``, ``chrf``, ``exact_match``, ``accuracy``) are on a 0-100 scale so every
"higher is better" score in qkv's logs reads the same way.

References may be one string per hypothesis, or a list of alternative references per
hypothesis (the lists may differ in length): BLEU and chrF use them as multiple references,
exact match accepts any of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from qkv.data.tokenizers import split_words


def _ref_lists(hyps: Sequence[str], refs: Sequence[str | Sequence[str]]) -> list[list[str]]:
    if len(hyps) != len(refs):
        raise ValueError(f"got {len(hyps)} hypotheses but {len(refs)} references")
    if len(hyps) == 0:
        raise ValueError("no hypotheses to score")
    out = []
    for i, r in enumerate(refs):
        rs = [r] if isinstance(r, str) else list(r)
        if not rs:
            raise ValueError(f"hypothesis {i} has an empty list of references")
        out.append(rs)
    return out


def _streams(ref_lists: list[list[str]]) -> list[list[str | None]]:
    """sacrebleu's layout: one stream per reference slot; ``None`` fills missing slots."""
    k = max(len(r) for r in ref_lists)
    return [[r[j] if j < len(r) else None for r in ref_lists] for j in range(k)]


def bleu(hyps: Sequence[str], refs: Sequence[str | Sequence[str]]) -> float:
    """Corpus BLEU (Papineni et al., 2002) with sacrebleu's defaults (13a tokenization,
    exponential smoothing), 0-100.

    Args:
        hyps: detokenized hypotheses.
        refs: one reference (or a list of references) per hypothesis.

    Raises:
        ValueError: lengths differ or there is nothing to score.
    """
    import sacrebleu

    ref_lists = _ref_lists(hyps, refs)
    return float(sacrebleu.corpus_bleu(list(hyps), _streams(ref_lists)).score)


def chrf(hyps: Sequence[str], refs: Sequence[str | Sequence[str]]) -> float:
    """Corpus chrF (Popović, 2015; character 6-grams, beta 2) via sacrebleu, 0-100.

    Raises:
        ValueError: lengths differ or there is nothing to score.
    """
    import sacrebleu

    ref_lists = _ref_lists(hyps, refs)
    return float(sacrebleu.corpus_chrf(list(hyps), _streams(ref_lists)).score)


def caption_tokens(text: str) -> str:
    """A caption as CIDEr's tokenizer would give it: lowercase words, punctuation dropped,
    joined by spaces. Stands in for pycocoevalcap's ``PTBTokenizer``, which runs Java's
    Stanford tokenizer (and also drops punctuation)."""
    return " ".join(w for w in split_words(text, lowercase=True) if any(c.isalnum() for c in w))


def cider(hyps: Sequence[str], refs: Sequence[str | Sequence[str]]) -> float:
    """Corpus CIDEr (Vedantam et al. 2015) with pycocoevalcap's ``Cider`` (n-grams up to 4,
    tf-idf over the references given, the COCO scale: 0 to about 10; COCO papers print it
    times 100). Texts are tokenized by :func:`caption_tokens`.

    Raises:
        ValueError: lengths differ or there is nothing to score.
    """
    from pycocoevalcap.cider.cider import Cider

    ref_lists = _ref_lists(hyps, refs)
    gts = {i: [caption_tokens(r) for r in rs] for i, rs in enumerate(ref_lists)}
    res = {i: [caption_tokens(h)] for i, h in enumerate(hyps)}
    score, _ = Cider().compute_score(gts, res)
    return float(score)


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def rouge_each(
    hyps: Sequence[str],
    refs: Sequence[str | Sequence[str]],
    types: Sequence[str] = ROUGE_TYPES,
) -> list[dict[str, float]]:
    """Per-hypothesis ROUGE F-measures (Lin, 2004) from Google's ``rouge-score`` package, 0-100.

    The package's tokenizer lowercases and keeps ``[a-z0-9]+`` tokens; Porter stemming is on
    (``use_stemmer=True``, as in the summarization literature since See et al. 2017). With
    several references, each type takes its best reference (``score_multi``).

    Args:
        hyps: the hypotheses.
        refs: one reference (or a list of references) per hypothesis.
        types: ``rouge1``, ``rouge2``, ``rougeL`` (summary-level LCS is ``rougeLsum``).

    Raises:
        ValueError: lengths differ or there is nothing to score.
    """
    from rouge_score import rouge_scorer

    ref_lists = _ref_lists(hyps, refs)
    scorer = rouge_scorer.RougeScorer(list(types), use_stemmer=True)
    out = []
    for h, rs in zip(hyps, ref_lists):
        s = scorer.score(rs[0], h) if len(rs) == 1 else scorer.score_multi(rs, h)
        out.append({t: 100.0 * s[t].fmeasure for t in types})
    return out


def rouge(
    hyps: Sequence[str],
    refs: Sequence[str | Sequence[str]],
    types: Sequence[str] = ROUGE_TYPES,
) -> dict[str, float]:
    """Mean ROUGE F-measures over the hypotheses (:func:`rouge_each`), 0-100.

    Raises:
        ValueError: lengths differ or there is nothing to score.
    """
    each = rouge_each(hyps, refs, types)
    return {t: sum(e[t] for e in each) / len(each) for t in types}


def exact_match(hyps: Sequence[str], refs: Sequence[str | Sequence[str]]) -> float:
    """Percentage of hypotheses equal to (one of) their reference(s) after stripping
    surrounding whitespace, 0-100.

    Raises:
        ValueError: lengths differ or there is nothing to score.
    """
    ref_lists = _ref_lists(hyps, refs)
    hits = sum(h.strip() in {r.strip() for r in rs} for h, rs in zip(hyps, ref_lists))
    return 100.0 * hits / len(hyps)


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Percentage of predictions equal to their labels, 0-100.

    Raises:
        ValueError: lengths differ or there is nothing to score.
    """
    if len(predictions) != len(labels):
        raise ValueError(f"got {len(predictions)} predictions but {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError("no predictions to score")
    return 100.0 * sum(int(p) == int(y) for p, y in zip(predictions, labels)) / len(labels)


def _error_rate(kind: str, hyps: Sequence[str], refs: Sequence[str]) -> float:
    if len(hyps) != len(refs):
        raise ValueError(f"got {len(hyps)} hypotheses but {len(refs)} references")
    if len(hyps) == 0:
        raise ValueError("no hypotheses to score")
    if any(not r.strip() for r in refs):
        raise ValueError("a reference is empty: error rates are per reference word")
    import jiwer  # an optional dependency (the speech extra)

    fn = jiwer.wer if kind == "wer" else jiwer.cer
    return 100.0 * float(fn(list(refs), list(hyps)))


def word_error_rate(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus word error rate, 0-100 (may exceed 100): ``(S + D + I) / N`` over all
    reference words (``jiwer.wer``; words split on whitespace).

    Raises:
        ValueError: different counts, no hypotheses, or an empty reference.
    """
    return _error_rate("wer", hyps, refs)


def char_error_rate(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus character error rate, 0-100 (``jiwer.cer``; spaces count as characters).

    Raises:
        ValueError: different counts, no hypotheses, or an empty reference.
    """
    return _error_rate("cer", hyps, refs)


def perplexity(loss_nats: float) -> float:
    """Perplexity ``exp(loss)`` of a mean per-token cross entropy in nats (inf on overflow)."""
    try:
        return math.exp(loss_nats)
    except OverflowError:
        return math.inf


def bits_per_char(total_nats: float, n_chars: int) -> float:
    """Bits per character: ``total_nats / (n_chars * ln 2)``.

    Args:
        total_nats: summed negative log likelihood of a text, in nats.
        n_chars: number of characters of that text.

    Raises:
        ValueError: ``n_chars`` is not positive.
    """
    if n_chars <= 0:
        raise ValueError(f"n_chars must be positive, got {n_chars}")
    return total_nats / (n_chars * math.log(2))


# -- detection ---------------------------------------------------------------------------
def map_backend() -> str | None:
    """The maintained COCO mAP implementation available: ``"torchmetrics"``
    (``MeanAveragePrecision``, itself on pycocotools or faster-coco-eval), ``"pycocotools"``
    (``COCOeval``), or None."""
    import importlib.util

    try:  # torchmetrics exports MeanAveragePrecision only where torchvision is installed
        from torchmetrics.detection import MeanAveragePrecision  # noqa: F401

        has_tm = True
    except ImportError:
        has_tm = False
    has_coco = importlib.util.find_spec("pycocotools") is not None
    has_fast = importlib.util.find_spec("faster_coco_eval") is not None
    if has_tm and (has_coco or has_fast):
        return "torchmetrics"
    return "pycocotools" if has_coco else None


def detection_map(preds: Sequence[Any], targets: Sequence[Any]) -> dict[str, float]:
    """COCO-style mean average precision of box detections (Lin et al. 2014): ``map``
    (mAP@[.5:.95], IoU thresholds 0.50, 0.55, ..., 0.95) and ``map_50`` (mAP@.5), 0-100,
    computed by a maintained implementation (:func:`map_backend`), never by hand.

    Args:
        preds: per image ``{"boxes": (k, 4) xyxy pixels, "scores": (k,), "labels": (k,)}``.
        targets: per image ``{"boxes": (n, 4) xyxy pixels, "labels": (n,)}``.

    Returns:
        ``{"map": ..., "map_50": ...}``.

    Raises:
        ImportError: neither torchmetrics (with pycocotools or faster-coco-eval) nor
            pycocotools is installed (``pip install torchmetrics pycocotools``).
        ValueError: as many predictions as targets are needed.
    """
    if len(preds) != len(targets):
        raise ValueError(f"got {len(preds)} predictions but {len(targets)} targets")
    backend = map_backend()
    if backend == "torchmetrics":
        from torchmetrics.detection import MeanAveragePrecision

        metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox")
        metric.update(
            [{k: p[k].detach().cpu() for k in ("boxes", "scores", "labels")} for p in preds],
            [{k: t[k].detach().cpu() for k in ("boxes", "labels")} for t in targets],
        )
        out = metric.compute()
        return {"map": 100.0 * float(out["map"]), "map_50": 100.0 * float(out["map_50"])}
    if backend == "pycocotools":
        return _coco_map(preds, targets)
    raise ImportError(
        "COCO mAP needs a maintained implementation: `pip install torchmetrics pycocotools` "
        "(or pycocotools alone)"
    )


def _coco_map(preds: Sequence[Any], targets: Sequence[Any]) -> dict[str, float]:
    """mAP with pycocotools' ``COCOeval`` on in-memory ground truth and detections."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(b: Any) -> list[float]:
        x0, y0, x1, y1 = (float(v) for v in b)
        return [x0, y0, x1 - x0, y1 - y0]

    images, anns, dets, cats = [], [], [], set()
    for i, (p, t) in enumerate(zip(preds, targets)):
        images.append({"id": i})
        for box, label in zip(t["boxes"].tolist(), t["labels"].tolist()):
            w = xywh(box)
            cats.add(int(label))
            anns.append(
                {"id": len(anns) + 1, "image_id": i, "category_id": int(label), "bbox": w}
                | {"area": w[2] * w[3], "iscrowd": 0}
            )
        for box, score, label in zip(
            p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist()
        ):
            cats.add(int(label))
            dets.append(
                {"image_id": i, "category_id": int(label), "bbox": xywh(box), "score": float(score)}
            )
    if not anns or not dets:
        return {"map": 0.0, "map_50": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": images,
            "annotations": anns,
            "categories": [{"id": c} for c in sorted(cats)],
        }
        gt.createIndex()
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {
        "map": 100.0 * max(float(ev.stats[0]), 0.0),
        "map_50": 100.0 * max(float(ev.stats[1]), 0.0),
    }


__all__ = [
    "ROUGE_TYPES",
    "accuracy",
    "bits_per_char",
    "bleu",
    "caption_tokens",
    "char_error_rate",
    "chrf",
    "cider",
    "detection_map",
    "exact_match",
    "map_backend",
    "perplexity",
    "rouge",
    "rouge_each",
    "word_error_rate",
]
