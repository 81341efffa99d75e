"""neo.train."""
