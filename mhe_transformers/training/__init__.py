"""Training pipelines: shared arguments, run set-up and final save (loop), pretraining, fine-tuning, QA, tokenizer."""
