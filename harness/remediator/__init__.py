"""`gpu-burnin remediator`: the one place where fleet-wide decisions are made.

The node agents (preflight, periodic, the watch) only report on their own node; a failure
is a *request*: the health label `failing`, a severity, `gpu-burnin/requested`. The
remediator, one Deployment of two replicas with a Lease deciding which one acts, keeps a
metadata-only view of the GPU nodes (`view`), decides under the brake which requests to
serve (`brake`, a pure function of that view), takes nodes out and drains the critical
ones (`act`), and keeps no journal: every decision is recomputed from the nodes
themselves after a restart or a failover. `leader` is the Lease; `command` the process.
"""
