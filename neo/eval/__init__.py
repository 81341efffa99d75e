"""neo.eval: evaluation tasks on a trained model (`neo eval`)."""
