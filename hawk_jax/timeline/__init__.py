"""Long videos and live streams: anomaly scores per window read from the model's yes/no
answer distribution, frame scores, anomalous intervals and their pictures (cli.py)."""
