"""Training: the LightningModule, the optimizer-step loop, the run, checkpoints and resuming,
the LR finder and transfer learning."""
