"""Text: the tokenizer, the prompt layouts of the three stages, captions and motion text."""
