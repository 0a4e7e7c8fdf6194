"""browser: one self-contained HTML page per run (questions, images, attention, samples, scores, metrics)."""
