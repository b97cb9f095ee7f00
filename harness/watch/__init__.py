"""The passive health watch: `gpu-burnin watch`, one long-running process per GPU node.

It reads NVML (snapshots every `--interval`, Xid events) without allocating GPU memory
or launching a kernel, judges what it reads with the health rules the active suite
uses (harness/health.py, thresholds from the baselines), and reports on its own node
only: it records a finding, or requests that the node be taken out (the health label
`failing`, a severity); the remediator decides, under the fleet's brake. Every action
is journaled before it is taken.

    config    the options, checked at the edge
    judge     snapshots and Xid events in, findings out (the suite's rules)
    flap      how long a finding must hold, what it leads to, once
    journal   the JSON Lines record of every action, fsynced, replayed on start (never stopped by it)
    log       one line for every finding's course and every action, none for a quiet poll
    act       the writes to its own node, through harness/kube
    loop      the polling loop, with an injectable clock
    metrics   the node-exporter textfile
    command   the command line's entry: build everything, run, exit code

It never imports torch: the GPUs are the jobs', not the watch's.
"""
