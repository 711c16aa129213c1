"""Evaluation and benchmarking tools (``stcm eval``, ``stcm bench``): rate-distortion against
classical codecs, BD-rate, timing reports. They use the runtime like any user does; nothing
in models/, export/, runtime/ or kernels/ imports them (tests/test_architecture.py)."""
