"""Hyperparameter search on Optuna, and the protocol around it: choose on validation, retrain on
train+validation, evaluate the test split once. Modules: space (the [search] schema), strategies
(samplers), pruning, study (storage and workers), protocol (retrain and test), outputs."""
