"""Post-training data (paper section 4.3): per-capability data built around the SFT and preference formats."""
