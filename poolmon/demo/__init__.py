"""``poolmon demo``: a phased workload over real local resources, served and shown in ``top``."""
