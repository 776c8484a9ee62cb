"""An OpenAI-compatible chat server over one loaded model (`slimvl serve`)."""
