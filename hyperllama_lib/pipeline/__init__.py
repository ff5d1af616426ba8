"""The six steps of the paper, one module per notebook, with the run layout and the grid runner."""
