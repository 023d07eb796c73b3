"""One module per pipeline step; each is thin glue between bus, chain and core."""
