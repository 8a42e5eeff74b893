"""qexp: run and compare LLM weight-quantization studies."""
