"""The Hostwinds port: the API client, the sandbox that stands in for it, capture and replay."""
