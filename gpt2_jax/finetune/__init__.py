"""A whole run: its settings, its folder, its steps, its report."""
