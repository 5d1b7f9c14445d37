"""Sharing checkpoints on the Hugging Face Hub: model cards (`model_card`) and verified pushes (`push`)."""
