"""Lightning callbacks that watch a run: divergence, the model summary, gradient diagnostics."""
