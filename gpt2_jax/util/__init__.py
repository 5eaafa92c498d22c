"""Small tools every layer may use: pytrees, files, downloads, process settings."""
