"""Ready-made sources: each turns a device's output into records of a channel."""
