"""neo.infer: loading a model for inference and generating text from it (`neo sample`)."""
