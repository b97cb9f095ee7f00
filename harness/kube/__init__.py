"""Kubernetes: the node lifecycle of preflight, periodic, retest and status.

`api` is the only module that imports the `kubernetes` client; `node` computes
what to change on a node from plain dicts; `actions` runs the entrypoints' flows.
"""
