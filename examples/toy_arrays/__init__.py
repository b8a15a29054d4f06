"""An example dataset folder in the TFDS layout (see README: declarative path)."""
