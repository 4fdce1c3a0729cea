"""VK as a channel: a community bot's dialogs become tickets (R-CH-4)."""
