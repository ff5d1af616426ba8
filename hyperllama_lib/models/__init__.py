"""Models: the HyperLlama architecture, HyperCloning and the authors' released checkpoints."""
