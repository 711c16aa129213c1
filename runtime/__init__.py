"""The engine: backends, the wavefront scheduler, entropy coding, the container and image I/O
(docs/runtime.md)."""
