"""Model zoo, architecture assignment and device selection."""
