"""virtlab.demo."""
