"""SMS: an outbound channel only; its providers' API clients (api.py) and the check."""
