"""Label metrics and the TF-IDF + logistic-regression baseline of the text classifiers, both
from scikit-learn.

The baseline is the classic strong one for topic-like labels (Joachims 1998; Wang and
Manning 2012): word uni- and bigram TF-IDF features (sublinear term frequency, terms seen
in at least 2 training texts) and a multinomial logistic regression (L2, ``C=1``,
scikit-learn's default), fitted on the training texts and scored on another split with
:func:`label_metrics`, so its row in a comparison table reads exactly like the models'.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: The baseline's settings (scikit-learn's names), reported beside its numbers.
TFIDF_SETTINGS: dict[str, dict[str, Any]] = {
    "TfidfVectorizer": {"ngram_range": (1, 2), "min_df": 2, "sublinear_tf": True},
    "LogisticRegression": {"C": 1.0, "max_iter": 1000},
}


def label_metrics(true: Sequence[int], pred: Sequence[int]) -> dict[str, float]:
    """Accuracy and macro-F1, both 0-100, from scikit-learn (macro-F1: the unweighted mean of
    the per-class F1 over the classes that occur in ``true`` or ``pred``).

    Raises:
        ValueError: sequences of different lengths, or empty ones.
    """
    from sklearn.metrics import accuracy_score, f1_score

    if len(true) != len(pred) or not true:
        raise ValueError(
            f"need as many predictions as labels (>0), got {len(pred)} and {len(true)}"
        )
    return {
        "accuracy": 100.0 * float(accuracy_score(true, pred)),
        "macro_f1": 100.0 * float(f1_score(true, pred, average="macro", zero_division=0)),
    }


def tfidf_baseline(
    train_texts: Sequence[str],
    train_labels: Sequence[int],
    test_texts: Sequence[str],
    test_labels: Sequence[int],
) -> dict[str, float]:
    """Fit TF-IDF + logistic regression (:data:`TFIDF_SETTINGS`) on the training texts and
    score it on the test texts.

    Args:
        train_texts / train_labels: the training split (labels are class indices).
        test_texts / test_labels: the split to score.

    Returns:
        :func:`label_metrics` of the test predictions.

    Raises:
        ValueError: fewer than 2 classes in the training labels, or empty splits.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    if len(set(train_labels)) < 2:
        raise ValueError("the TF-IDF baseline needs at least 2 classes in the training split")
    vectorizer = TfidfVectorizer(**TFIDF_SETTINGS["TfidfVectorizer"])
    features = vectorizer.fit_transform(list(train_texts))
    classifier = LogisticRegression(**TFIDF_SETTINGS["LogisticRegression"])
    classifier.fit(features, list(train_labels))
    pred = classifier.predict(vectorizer.transform(list(test_texts)))
    return label_metrics(list(test_labels), [int(p) for p in pred])


__all__ = ["TFIDF_SETTINGS", "label_metrics", "tfidf_baseline"]
