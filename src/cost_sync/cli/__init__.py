"""The command line: a module per verb group, rendering for people and scripts."""
