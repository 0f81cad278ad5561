"""Held-out evaluation of a classifier: the confusion matrix, accuracy, mean class recall and chance level."""

from __future__ import annotations

import numpy as np


def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    """(classes, classes) counts: row = true class, column = predicted class."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels.astype(np.int64), predicted.astype(np.int64)), 1)
    return matrix


def accuracy_report(probabilities: np.ndarray, labels: np.ndarray, classes: int) -> dict[str, float]:
    """Accuracy (the headline), per-class mean recall, and the chance level of the held-out images."""
    predicted = probabilities.argmax(axis=1)
    matrix = confusion_matrix(predicted, labels, classes)
    support = matrix.sum(axis=1)
    recall = np.diag(matrix)[support > 0] / support[support > 0]
    return {
        "accuracy": float(np.mean(predicted == labels)),
        "mean_class_recall": float(recall.mean()),
        "chance_accuracy": float(np.max(np.bincount(labels, minlength=classes)) / len(labels)),
    }
