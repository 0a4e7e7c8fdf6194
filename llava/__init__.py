"""A small LLaVA-1.5 runtime on top of transformers' LlavaForConditionalGeneration."""
