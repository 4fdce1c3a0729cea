"""Telegram: a bot customers write to (adapter.py) and the record it keeps (parse.py)."""
