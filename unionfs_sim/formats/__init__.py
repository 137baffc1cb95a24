"""Real on-disk and on-wire formats: tar layers, overlay directories, OCI layouts, docker archives."""
