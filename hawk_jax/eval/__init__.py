"""Scoring, the paper's way: BLEU-1..4 (`bleu`), the GPT-guided judge (`judge`), the report in
the layout of the paper's Table 1 (`report`), and `python -m hawk_jax.eval` (`cli`), which can
generate the predictions from a checkpoint first (hawk_jax/infer/predict.py)."""
