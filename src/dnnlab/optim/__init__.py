"""What changes the weights: optimizers (and Keras' update rules), schedules, L1/L2 and max-norm,
gradient clipping."""
