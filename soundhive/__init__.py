"""The `soundhive` command line."""
