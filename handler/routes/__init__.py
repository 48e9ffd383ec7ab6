"""HTTP routes of the text-to-image function, one router per concern."""
