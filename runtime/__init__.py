"""The engine: wavefront scheduling, entropy coding and the container. See issue 3."""
