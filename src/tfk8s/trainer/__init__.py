"""The trainer: flags, model, TF_CONFIG, the training loop and the export (read train.py first)."""
