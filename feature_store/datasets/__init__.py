"""Public datasets converted into recloop's day partitions (see each module's docstring for
its source, licence and column mapping)."""
