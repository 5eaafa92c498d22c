"""Weight files in and out: OpenAI's checkpoints, Hugging Face folders, the Hub."""
