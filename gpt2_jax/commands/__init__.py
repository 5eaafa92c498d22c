"""The user commands behind `python -m experiments.<name>` and the console scripts."""
