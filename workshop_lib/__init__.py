"""Library behind the anomaly-detection workshop."""
