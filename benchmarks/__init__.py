"""nirlink benchmarks: scaled runs against named baselines, results as JSON + Markdown."""
