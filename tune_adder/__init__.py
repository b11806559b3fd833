"""tune_adder: an RNN that learns to add long numbers, swept with Ray Tune."""

__version__ = "0.1.0"
