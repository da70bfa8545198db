"""Native core: libbpf loader and ring-buffer reader (Cython) under a plain Python API."""
