"""The web form: a page whose submissions become tickets (R-CH-5); inbound only."""
