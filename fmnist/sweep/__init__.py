"""Sweeps on Dask: the grid (`grid`), one point's task on a worker (`task`), the client that submits and follows
them (`driver`), the report over a commit's experiments (`report`), and the command line (`cli`)."""
