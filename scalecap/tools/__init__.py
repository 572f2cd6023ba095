"""Tool agents: components that read the image without a language model (OCR)."""
