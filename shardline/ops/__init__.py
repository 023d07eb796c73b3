"""Operating a consortium: metrics endpoints, the stack snapshot behind `shardline monitor` and
`/ops`, dead letters, the bus tail and the trace search over the local stack's logs."""
