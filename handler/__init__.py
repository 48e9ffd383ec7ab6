"""thaw's text-to-image function: a FastAPI app over a diffusers pipeline held in a runtime slot."""
