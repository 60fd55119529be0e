"""Post-training (paper section 4): the SFT, reward-model and DPO losses and their batches over the open loop."""
