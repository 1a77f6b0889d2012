"""Process plumbing: logging, signal handling, serving HTTP inside the event loop."""
