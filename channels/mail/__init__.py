"""Email: parsing raw mail (parse.py); IMAP and SMTP/LMTP adapters come with the email transport."""
