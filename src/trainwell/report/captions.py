"""The report's figures by key, in page order, with their captions. plots.py draws them; the list
lives apart so that the page can be assembled from figures drawn by the helper process
(painter.py) without importing matplotlib here."""

CAPTIONS = {
    "curves": "Loss and metrics, train vs validation",
    "lr_grad": "Learning rate and gradient norm",
    "layer_grads": "Per-layer gradient norms and update ratios",
    "activations": "Per-layer activation histograms over training",
    "confusion": "Confusion matrix",
    "reliability": "Reliability diagram (calibration)",
}
