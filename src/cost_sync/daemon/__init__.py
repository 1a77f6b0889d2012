"""The long-lived process: the run queue, the admin HTTP API, metrics, scheduling."""
