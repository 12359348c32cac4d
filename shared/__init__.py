"""soundhive's common library: audio, front end, models, messages, bus, config, metrics."""
