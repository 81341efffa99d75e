"""neo.model."""
