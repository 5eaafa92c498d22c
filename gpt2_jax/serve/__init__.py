"""The served classifier: micro-batching, the HTTP app and its page."""
