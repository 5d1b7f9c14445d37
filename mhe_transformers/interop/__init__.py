"""MHE with other tools: MHA-to-MHE conversion and distillation, ONNX, PEFT (lora), sentence-transformers."""
