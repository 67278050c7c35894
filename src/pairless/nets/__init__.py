"""Network architectures, plain torch modules without training logic."""
