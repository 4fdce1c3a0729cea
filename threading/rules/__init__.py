"""Threading rules, one module each; chain.py holds the registry and runs them in order."""
