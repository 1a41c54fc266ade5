"""Evaluation metrics for the paper's three test settings.

* single-label classification (Table 1): [`topk_accuracy`][], [`evaluate_classifier`][];
* person re-identification (Table 2): [`reid_metrics`][], single-query Rank-k and mAP with
  Market-1501 camera filtering, official or torchreid average precision;
* multi-label clothing attributes (Table 3): [`multilabel_metrics`][], mAP and class-balanced
  accuracy of the top-5 predictions, per class and per image.

Every function accepts torch tensors or numpy arrays and returns plain Python numbers in [0, 1].
"""

from frlr.eval.classification import evaluate_classifier, topk_accuracy
from frlr.eval.multilabel import multilabel_metrics
from frlr.eval.reid import reid_metrics

__all__ = ["evaluate_classifier", "multilabel_metrics", "reid_metrics", "topk_accuracy"]
